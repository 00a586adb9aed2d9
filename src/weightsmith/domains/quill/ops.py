"""The Quill operator table: the single source of truth for the language.

The parser type-checks against it, the interpreter calls its kernels, the manual renders a
reference page from it and the task generator draws operators and English phrasings from it.
Adding an operator means adding one ``Op`` here (and its kernel in ``kernels.py``).

Argument kinds:
  series  a numeric panel (days x assets); a number literal is accepted and broadcast
  window  a positive integer literal: a number of trading days
  scalar  a number literal (a threshold, a power)
  group   a group label field; the only one is ``sector``
  mask    a condition (a comparison, or ``and``/``or``/``not`` of conditions, or a filter name)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from weightsmith.domains.quill import kernels as k

ARG_KINDS = ("series", "window", "scalar", "group", "mask")


@dataclass(frozen=True)
class Arg:
    name: str
    kind: str
    doc: str
    choices: tuple = ()  # values the generator and the manual pick from (windows, scalars)
    positive: bool = False  # a scalar that must be > 0


@dataclass(frozen=True)
class Op:
    name: str
    category: str
    args: tuple[Arg, ...]
    returns: str  # "series" | "mask"
    summary: str
    doc: str
    impl: Callable
    examples: tuple[str, ...]
    phrases: tuple[str, ...]  # English templates; placeholders are the argument names
    symbol: str | None = None  # infix/prefix spelling, for operators written as symbols
    min_window: int = 1
    lookback_offset: int = -1  # days of history used = window + offset (delay uses all n)

    @property
    def arity(self) -> int:
        return len(self.args)

    @property
    def signature(self) -> str:
        if self.symbol and len(self.args) == 2:
            return f"{self.args[0].name} {self.symbol} {self.args[1].name}"
        if self.symbol:
            return f"{self.symbol}{' ' if self.symbol.isalpha() else ''}{self.args[0].name}"
        return f"{self.name}({', '.join(a.name for a in self.args)})"

    def window_arg(self) -> Arg | None:
        return next((a for a in self.args if a.kind == "window"), None)


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: str  # "series" | "group"
    doc: str
    phrases: tuple[str, ...] = field(default=())


FIELDS: dict[str, FieldSpec] = {f.name: f for f in [
    FieldSpec("close", "series", "closing price of the day",
              ("close", "the close", "the closing price")),
    FieldSpec("open", "series", "opening price of the day",
              ("open", "the open", "the opening price")),
    FieldSpec("high", "series", "highest traded price of the day",
              ("high", "the daily high", "the high price")),
    FieldSpec("low", "series", "lowest traded price of the day",
              ("low", "the daily low", "the low price")),
    FieldSpec("volume", "series", "number of shares traded that day",
              ("volume", "traded volume", "the volume")),
    FieldSpec("returns", "series", "close-to-close return, close / yesterday's close - 1 (NaN on the first day)",
              ("returns", "daily returns", "the daily return")),
    FieldSpec("sector", "group", "the asset's sector, a group label usable only as a group argument",
              ("sector",)),
]}

X = Arg("x", "series", "the input series")
Y = Arg("y", "series", "the second input series")
A = Arg("a", "series", "left operand")
B = Arg("b", "series", "right operand")
G = Arg("g", "group", "group labels (sector)")
CA = Arg("a", "mask", "left condition")
CB = Arg("b", "mask", "right condition")


def W(choices=(3, 5, 10, 20)) -> Arg:
    return Arg("n", "window", "window length in trading days", tuple(choices))


_NAN_TS = ("The first n-1 days have no full window and are NaN, and so is any window that holds "
           "a NaN: a rolling statistic is only reported when all n days are known.")
_NAN_CS = ("Missing assets (NaN) are left out of the day's statistic and stay NaN in the result.")
_NAN_EW = "NaN in gives NaN out."


def _op(name, category, args, summary, doc, impl, examples, phrases, returns="series", **kw) -> Op:
    return Op(name, category, tuple(args), returns, summary, doc, impl, tuple(examples), tuple(phrases), **kw)


_TABLE = [
    # ---- time series ------------------------------------------------------------------------
    _op("delay", "time-series", [X, W((1, 2, 3, 5, 10, 20))], "the value n days ago",
        "delay(x, n) on day t is x on day t-n. " + "The first n days are NaN.", k.delay,
        ["delay(close, 1)", "close / delay(close, 5) - 1"],
        ["{x} {n} days ago", "the value of {x} {n} days ago", "{x} lagged by {n} days", "the {n}-day lag of {x}"],
        lookback_offset=0),
    _op("delta", "time-series", [X, W((1, 2, 3, 5, 10, 20))], "change over n days",
        "delta(x, n) = x - delay(x, n): today's value minus the value n days ago. The first n days are NaN.",
        k.delta, ["delta(close, 5)", "rank(delta(close, 5))"],
        ["the {n}-day change in {x}", "the difference between {x} and its value {n} days ago",
         "delta of {x} over a {n} day window"], lookback_offset=0),
    _op("pct_change", "time-series", [X, W((1, 2, 5, 10, 20))], "fractional change over n days",
        "pct_change(x, n) = x / delay(x, n) - 1. NaN when the old value is 0 or missing.",
        k.pct_change, ["pct_change(close, 20)", "zscore(pct_change(close, 10))"],
        ["the {n}-day percent change in {x}", "the fractional change of {x} over {n} days",
         "the {n}-day return of {x}"], lookback_offset=0),
    _op("ts_mean", "time-series", [X, W()], "rolling mean over n days",
        "ts_mean(x, n) is the average of x over the last n days, today included. " + _NAN_TS,
        k.ts_mean, ["ts_mean(volume, 20)", "close / ts_mean(close, 10)"],
        ["the {n}-day average of {x}", "the {n}-day moving average of {x}",
         "the mean of {x} over the last {n} days"]),
    _op("ts_sum", "time-series", [X, W()], "rolling sum over n days",
        "ts_sum(x, n) adds up x over the last n days, today included. " + _NAN_TS,
        k.ts_sum, ["ts_sum(returns, 5)", "ts_sum(volume, 10)"],
        ["the {n}-day sum of {x}", "the total of {x} over the last {n} days", "{x} summed over {n} days"]),
    _op("ts_std", "time-series", [X, W()], "rolling standard deviation over n days",
        "ts_std(x, n) is the sample standard deviation (ddof=1) of x over the last n days; "
        "n must be at least 2. " + _NAN_TS,
        k.ts_std, ["ts_std(returns, 20)", "-ts_std(returns, 10)"],
        ["the {n}-day standard deviation of {x}", "the rolling {n}-day volatility of {x}",
         "the standard deviation of {x} over the past {n} days"], min_window=2),
    _op("ts_max", "time-series", [X, W()], "rolling maximum over n days",
        "ts_max(x, n) is the largest value of x over the last n days. " + _NAN_TS,
        k.ts_max, ["ts_max(close, 20)", "close / ts_max(close, 10)"],
        ["the maximum of {x} over the last {n} days", "the {n}-day rolling max of {x}",
         "the largest value of {x} in the past {n} days"]),
    _op("ts_min", "time-series", [X, W()], "rolling minimum over n days",
        "ts_min(x, n) is the smallest value of x over the last n days. " + _NAN_TS,
        k.ts_min, ["ts_min(low, 10)", "close - ts_min(close, 20)"],
        ["the minimum of {x} over the last {n} days", "the {n}-day rolling min of {x}",
         "the smallest value of {x} in the past {n} days"]),
    _op("ts_argmax", "time-series", [X, W()], "days since the n-day maximum",
        "ts_argmax(x, n) counts the days since x was at its maximum within the last n days: 0 means "
        "today is the high point. On ties the most recent day counts. " + _NAN_TS,
        k.ts_argmax, ["ts_argmax(close, 10)", "ts_argmax(volume, 20)"],
        ["the number of days since {x} hit its {n}-day maximum", "days since the {n}-day max of {x}",
         "how many days ago {x} peaked within the last {n} days"]),
    _op("ts_argmin", "time-series", [X, W()], "days since the n-day minimum",
        "ts_argmin(x, n) counts the days since x was at its minimum within the last n days: 0 means "
        "today is the low point. On ties the most recent day counts. " + _NAN_TS,
        k.ts_argmin, ["ts_argmin(close, 10)", "ts_argmin(low, 20)"],
        ["the number of days since {x} hit its {n}-day minimum", "days since the {n}-day min of {x}",
         "how many days ago {x} bottomed within the last {n} days"]),
    _op("ts_rank", "time-series", [X, W()], "today's percentile within the last n days",
        "ts_rank(x, n) places today's x among the last n values of the same asset, scaled to [0, 1]: "
        "(values below today + half the ties) / (n - 1). 1 means today is the n-day high, 0 the low. "
        "n must be at least 2. " + _NAN_TS,
        k.ts_rank, ["ts_rank(close, 10)", "ts_rank(volume, 20)"],
        ["the {n}-day time-series rank of {x}", "where {x} ranks today within its last {n} days",
         "the percentile of {x} today within its own {n}-day history", "the {n}-day ts_rank of {x}"], min_window=2),
    _op("ts_zscore", "time-series", [X, W()], "distance from the n-day mean in n-day standard deviations",
        "ts_zscore(x, n) = (x - ts_mean(x, n)) / ts_std(x, n). NaN when the window is flat. "
        "n must be at least 2. " + _NAN_TS,
        k.ts_zscore, ["ts_zscore(close, 20)", "ts_zscore(volume, 10)"],
        ["the {n}-day z-score of {x}", "{x} standardized by its own {n}-day mean and standard deviation",
         "the time-series z-score of {x} over {n} days"], min_window=2),
    _op("ts_corr", "time-series", [X, Y, W((5, 10, 20))], "rolling correlation of two series",
        "ts_corr(x, y, n) is the Pearson correlation of x and y over the last n days, per asset. "
        "NaN when either side is flat over the window. n must be at least 2. " + _NAN_TS,
        k.ts_corr, ["ts_corr(close, volume, 10)", "ts_corr(returns, delay(returns, 1), 20)"],
        ["the {n}-day correlation between {x} and {y}", "the rolling {n}-day correlation of {x} with {y}",
         "the correlation of {x} and {y} over the last {n} days"], min_window=2),
    _op("ts_cov", "time-series", [X, Y, W((5, 10, 20))], "rolling covariance of two series",
        "ts_cov(x, y, n) is the sample covariance (ddof=1) of x and y over the last n days, per asset. "
        "n must be at least 2. " + _NAN_TS,
        k.ts_cov, ["ts_cov(returns, volume, 20)", "ts_cov(close, open, 10)"],
        ["the {n}-day covariance between {x} and {y}", "the rolling {n}-day covariance of {x} with {y}",
         "the covariance of {x} and {y} over the last {n} days"], min_window=2),
    _op("decay_linear", "time-series", [X, W()], "linearly weighted moving average",
        "decay_linear(x, n) is a weighted mean of the last n days with weights n, n-1, ..., 1 "
        "(today weighs most), divided by their sum. " + _NAN_TS,
        k.decay_linear, ["decay_linear(returns, 10)", "decay_linear(close, 5)"],
        ["the {n}-day linearly decayed average of {x}", "a linearly weighted {n}-day average of {x}",
         "decay_linear of {x} over {n} days"]),
    # ---- cross-section ----------------------------------------------------------------------
    _op("rank", "cross-sectional", [X], "percentile rank across assets, in [0, 1]",
        "rank(x) ranks the assets against each other on each day: the lowest gets 0, the highest 1, "
        "ties share their average rank, and a lone asset gets 0.5. " + _NAN_CS,
        k.rank, ["rank(close)", "rank(delta(close, 5))", "rank(-returns)"],
        ["the cross-sectional rank of {x}", "{x} ranked across assets",
         "the percentile rank of {x} across all assets each day"]),
    _op("zscore", "cross-sectional", [X], "standardize across assets",
        "zscore(x) = (x - mean) / std over the assets of the same day (population std). When every "
        "asset has the same value the result is 0. " + _NAN_CS,
        k.zscore, ["zscore(returns)", "zscore(ts_mean(returns, 5))"],
        ["the cross-sectional z-score of {x}", "{x} standardized across assets",
         "the z-score of {x} across the universe each day"]),
    _op("demean", "cross-sectional", [X], "subtract the day's average across assets",
        "demean(x) = x minus the average of x over the assets of the same day, so each day sums to 0. "
        + _NAN_CS,
        k.demean, ["demean(returns)", "demean(ts_sum(returns, 5))"],
        ["{x} minus its cross-sectional mean", "{x} demeaned across assets",
         "{x} with the daily cross-sectional average removed", "the cross-sectionally demeaned value of {x}"]),
    _op("scale", "cross-sectional", [X], "rescale so absolute values sum to 1",
        "scale(x) divides x by the sum of |x| over the assets of the same day, so the absolute values "
        "sum to 1 (a book with gross exposure 1). A day that is all zero stays zero. " + _NAN_CS,
        k.scale, ["scale(demean(returns))", "scale(rank(close) - 0.5)"],
        ["{x} scaled to unit gross exposure", "{x} scaled so its absolute values sum to 1",
         "{x} normalized by its daily sum of absolute values", "the unit-gross rescaling of {x}"]),
    _op("winsorize", "cross-sectional", [X, Arg("k", "scalar", "number of standard deviations", (1.5, 2), positive=True)],
        "clip outliers across assets",
        "winsorize(x, k) clips x to mean +- k standard deviations, computed over the assets of the same "
        "day (population std). k is a number literal. " + _NAN_CS,
        k.winsorize, ["winsorize(returns, 2)", "winsorize(delta(close, 5), 1.5)"],
        ["{x} winsorized at {k} standard deviations",
         "{x} clipped to {k} cross-sectional standard deviations around the mean",
         "{x} with outliers clipped at {k} sigma", "the {k}-sigma winsorized value of {x}"]),
    # ---- groups -----------------------------------------------------------------------------
    _op("group_demean", "group", [X, G], "subtract the sector average",
        "group_demean(x, sector) = x minus the average of x over the assets of the same sector on the "
        "same day: a sector-neutral version of x. " + _NAN_CS,
        k.group_demean, ["group_demean(returns, sector)", "group_demean(delta(close, 5), sector)"],
        ["{x} demeaned within each sector", "{x} minus its sector average", "the sector-neutral version of {x}"]),
    _op("group_rank", "group", [X, G], "percentile rank within the sector",
        "group_rank(x, sector) ranks each asset against the other assets of its sector on the same "
        "day, scaled to [0, 1] like rank. " + _NAN_CS,
        k.group_rank, ["group_rank(returns, sector)", "group_rank(ts_mean(volume, 5), sector)"],
        ["the rank of {x} within its sector", "{x} ranked inside each sector", "the within-sector percentile of {x}"]),
    _op("group_mean", "group", [X, G], "the sector average",
        "group_mean(x, sector) is the average of x over the assets of the same sector on the same day, "
        "given to every asset of that sector. " + _NAN_CS,
        k.group_mean, ["group_mean(returns, sector)", "returns - group_mean(returns, sector)"],
        ["the sector average of {x}", "the mean of {x} over the asset's sector", "{x} averaged by sector"]),
    # ---- element-wise -----------------------------------------------------------------------
    _op("abs", "element-wise", [X], "absolute value", "abs(x) is |x|. " + _NAN_EW, np.abs,
        ["abs(returns)", "ts_mean(abs(returns), 20)"],
        ["the absolute value of {x}", "the magnitude of {x}", "abs of {x}"]),
    _op("log", "element-wise", [X], "natural logarithm",
        "log(x) is the natural logarithm; NaN where x <= 0. " + _NAN_EW, k.log,
        ["log(volume)", "log(close / open)"],
        ["the log of {x}", "the natural logarithm of {x}", "log of {x}"]),
    _op("sqrt", "element-wise", [X], "square root",
        "sqrt(x) is the square root; NaN where x < 0. " + _NAN_EW, k.sqrt,
        ["sqrt(volume)", "sqrt(abs(returns))"],
        ["the square root of {x}", "sqrt of {x}", "the root of {x}"]),
    _op("sign", "element-wise", [X], "-1, 0 or +1",
        "sign(x) is -1 where x < 0, 0 where x = 0 and +1 where x > 0. " + _NAN_EW, np.sign,
        ["sign(returns)", "sign(close - open)"],
        ["the sign of {x}", "the direction of {x} as -1, 0 or 1", "sign of {x}"]),
    _op("signed_power", "element-wise", [X, Arg("p", "scalar", "the exponent", (0.5, 2))],
        "power that keeps the sign",
        "signed_power(x, p) = sign(x) * |x| ** p; p is a number literal. " + _NAN_EW, k.signed_power,
        ["signed_power(returns, 2)", "signed_power(zscore(returns), 0.5)"],
        ["{x} raised to the power {p} keeping its sign", "the signed power {p} of {x}",
         "the sign-preserving power {p} of {x}"]),
    _op("max", "element-wise", [A, B], "element-wise larger of two series",
        "max(a, b) is the larger of a and b, asset by asset and day by day (not a rolling max: see "
        "ts_max). " + _NAN_EW, np.maximum,
        ["max(close, open)", "max(returns, 0)"],
        ["the larger of {a} and {b}", "the element-wise maximum of {a} and {b}", "max of {a} and {b}"]),
    _op("min", "element-wise", [A, B], "element-wise smaller of two series",
        "min(a, b) is the smaller of a and b, asset by asset and day by day (not a rolling min: see "
        "ts_min). " + _NAN_EW, np.minimum,
        ["min(close, open)", "min(returns, 0)"],
        ["the smaller of {a} and {b}", "the element-wise minimum of {a} and {b}", "min of {a} and {b}"]),
    _op("if_else", "conditional", [Arg("cond", "mask", "the condition"), A, B], "choose by a condition",
        "if_else(cond, a, b) is a where cond holds and b elsewhere, asset by asset and day by day. "
        "A condition on a missing value is false, so those cells take b.", k.if_else,
        ["if_else(close > open, returns, 0)", "if_else(volume > ts_mean(volume, 20), returns, -returns)"],
        ["{a} when {cond}, otherwise {b}", "if {cond} then {a}, else {b}", "{a} if {cond} and {b} otherwise"]),
    # ---- infix arithmetic ---------------------------------------------------------------------
    _op("add", "arithmetic", [A, B], "addition", "a + b. " + _NAN_EW, np.add,
        ["close + open", "rank(returns) + rank(volume)"],
        ["{a} plus {b}", "the sum of {a} and {b}", "{a} added to {b}"], symbol="+"),
    _op("sub", "arithmetic", [A, B], "subtraction", "a - b. " + _NAN_EW, np.subtract,
        ["close - open", "high - low"],
        ["{a} minus {b}", "the difference between {a} and {b}", "{a} less {b}"], symbol="-"),
    _op("mul", "arithmetic", [A, B], "multiplication", "a * b. " + _NAN_EW, np.multiply,
        ["returns * volume", "2 * rank(close)"],
        ["{a} times {b}", "the product of {a} and {b}", "{a} multiplied by {b}"], symbol="*"),
    _op("div", "arithmetic", [A, B], "division", "a / b; NaN where b is 0. " + _NAN_EW, k.divide,
        ["close / open", "(close - low) / (high - low)"],
        ["{a} divided by {b}", "the ratio of {a} to {b}", "the quotient of {a} and {b}"], symbol="/"),
    _op("neg", "arithmetic", [A], "negation", "-a flips the sign. " + _NAN_EW, np.negative,
        ["-returns", "-rank(volume)"],
        ["minus {a}", "the negative of {a}", "{a} with its sign flipped"], symbol="-"),
    # ---- comparisons ------------------------------------------------------------------------
    *[
        _op(name, "comparison", [A, B], summary,
            f"a {sym} b is a condition, true where it holds. A comparison with a missing value is false.",
            kernel, examples, phrases, returns="mask", symbol=sym)
        for name, sym, summary, kernel, examples, phrases in [
            ("gt", ">", "greater than", k.gt, ["close > open", "ts_mean(volume, 20) > 1e6"],
             ["{a} is greater than {b}", "{a} exceeds {b}", "{a} is above {b}"]),
            ("ge", ">=", "greater than or equal", k.ge, ["close >= ts_max(close, 20)", "rank(volume) >= 0.5"],
             ["{a} is at least {b}", "{a} is greater than or equal to {b}", "{a} is no less than {b}"]),
            ("lt", "<", "less than", k.lt, ["returns < 0", "close < ts_mean(close, 10)"],
             ["{a} is less than {b}", "{a} is below {b}", "{a} is under {b}"]),
            ("le", "<=", "less than or equal", k.le, ["ts_std(returns, 20) <= 0.02", "rank(close) <= 0.2"],
             ["{a} is at most {b}", "{a} is less than or equal to {b}", "{a} does not exceed {b}"]),
            ("eq", "==", "equal", k.eq, ["sign(returns) == 1", "ts_argmax(close, 10) == 0"],
             ["{a} equals {b}", "{a} is equal to {b}", "{a} is exactly {b}"]),
            ("ne", "!=", "not equal", k.ne, ["sign(returns) != 0", "ts_argmin(close, 5) != 0"],
             ["{a} differs from {b}", "{a} is not equal to {b}", "{a} is different from {b}"]),
        ]
    ],
    # ---- logic ------------------------------------------------------------------------------
    _op("and", "logic", [CA, CB], "both conditions", "a and b: true where both hold.", np.logical_and,
        ["close > open and volume > ts_mean(volume, 20)"], ["{a} and {b}", "both {a} and {b}"],
        returns="mask", symbol="and"),
    _op("or", "logic", [CA, CB], "either condition", "a or b: true where at least one holds.", np.logical_or,
        ["returns > 0.02 or returns < -0.02"], ["{a} or {b}", "either {a} or {b}"],
        returns="mask", symbol="or"),
    _op("not", "logic", [Arg("a", "mask", "the condition")], "negated condition",
        "not a: true where a does not hold (including where a was false because of a missing value).",
        np.logical_not, ["not close > open"], ["it is not the case that {a}", "not ({a})"],
        returns="mask", symbol="not"),
]

OPS: dict[str, Op] = {op.name: op for op in _TABLE}

# Spelling -> operator name for the symbol forms the parser reads.
BINARY_SYMBOLS = {op.symbol: op.name for op in _TABLE if op.symbol and op.arity == 2}
CALLABLE_OPS = {name: op for name, op in OPS.items() if not op.symbol}

CATEGORIES = ("time-series", "cross-sectional", "group", "element-wise", "conditional",
              "arithmetic", "comparison", "logic")


@dataclass(frozen=True)
class PortfolioKind:
    name: str
    summary: str
    doc: str
    impl: Callable
    uses_top: bool
    default_top: float | None
    max_top: float | None
    phrases: tuple[str, ...]


PORTFOLIO_KINDS: dict[str, PortfolioKind] = {p.name: p for p in [
    PortfolioKind(
        "long_short", "dollar-neutral: long the top, short the bottom",
        "Each day, among eligible assets (signal known and `where` true), hold +0.5/k in each of the k "
        "assets with the highest signal and -0.5/k in each of the k lowest, with k = floor(top * "
        "eligible), at least 1 and at most half the eligible assets. Days with fewer than 2 eligible "
        "assets hold nothing. Ties are broken by asset order. top defaults to 0.2 and must be in (0, 0.5].",
        k.long_short, True, 0.2, 0.5,
        ("a long-short portfolio on {signal}", "a dollar-neutral long-short book ranked by {signal}",
         "a portfolio that buys the highest {signal} and sells the lowest")),
    PortfolioKind(
        "long_only", "long the top fraction, equal weight",
        "Each day, hold 1/k in each of the k eligible assets with the highest signal, k = floor(top * "
        "eligible) and at least 1. top defaults to 0.2 and must be in (0, 1].",
        k.long_only, True, 0.2, 1.0,
        ("a long-only portfolio on {signal}", "a long-only book holding the highest {signal}",
         "a portfolio that only buys the highest {signal}")),
    PortfolioKind(
        "weighted", "weights proportional to the demeaned signal",
        "Each day, weights are the signal minus its average over eligible assets, divided by the sum of "
        "their absolute values: a dollar-neutral book with gross exposure 1. Ineligible assets weigh 0. "
        "It takes no top.",
        k.weighted, False, None, None,
        ("a signal-weighted portfolio on {signal}", "a portfolio weighted by demeaned {signal}",
         "a book with weights proportional to {signal} minus its average")),
]}

RESERVED_NAMES = frozenset(OPS) | frozenset(FIELDS) | frozenset(PORTFOLIO_KINDS) | {
    "signal", "filter", "portfolio", "pnl", "where", "top"}
