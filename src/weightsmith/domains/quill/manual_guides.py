"""Tutorials, the grammar, the style guide and the error guide of the Quill manual.

The prose is written by hand; every program in it is parsed, and every number and error message
quoted is produced by the interpreter and the parser when the manual is built, so the manual
cannot drift from the language.
"""

from __future__ import annotations

import numpy as np

from weightsmith.domains.quill.interp import run
from weightsmith.domains.quill.manual_reference import SAMPLE_SEED, error_of, sample_panel
from weightsmith.domains.quill.mdtable import code, fmt, table
from weightsmith.domains.quill.nodes import PORTFOLIO_OUTPUT
from weightsmith.domains.quill.ops import CATEGORIES, FIELDS, OPS
from weightsmith.domains.quill.parser import __doc__ as GRAMMAR_DOC
from weightsmith.domains.quill.parser import parse
from weightsmith.domains.quill.verify import answer, answers_equal


def last_day_table(source: str, names: list[str] | None = None) -> str:
    """The program's outputs on the last day of the sample panel, one row per asset."""
    panel = sample_panel()
    outputs = run(source, panel)
    names = names or [n for n in outputs if n != "pnl"]
    day = panel.shape[0] - 1
    rows = [[panel.assets[i], panel.sector_names[panel.sector[i]]] + [outputs[n][day, i] for n in names]
            for i in range(panel.shape[1])]
    return table(["asset", "sector"] + [f"`{n}`" for n in names], rows)


def summary(source: str) -> str:
    """One sentence on what the program's answer looks like on the sample panel."""
    program = parse(source)
    panel = sample_panel()
    result = run(program, panel)[program.result_name]
    if result.dtype == bool:
        return (f"On the sample panel the filter `{program.result_name}` is true for {fmt(100 * result.mean())}% "
                f"of asset-days.")
    if program.result_name == PORTFOLIO_OUTPUT:
        held = (np.abs(result) > 0).sum(axis=1)
        return f"On the sample panel the portfolio holds {fmt(held.mean())} positions a day on average."
    finite = np.isfinite(result)
    first = int(np.argmax(finite.any(axis=1)))
    return (f"On the sample panel `{program.result_name}` is first defined on day {first}, and its values "
            f"run from {fmt(np.nanmin(result))} to {fmt(np.nanmax(result))}.")


def show(source: str) -> str:
    return code(source) + "\n\n" + summary(source)


def overview() -> tuple[str, str]:
    by_category = "\n".join(
        f"- {category}: " + ", ".join(f"`{o.name}`" for o in OPS.values() if o.category == category)
        for category in CATEGORIES)
    text = f"""# Quill at a glance

Quill is our research language for cross-sectional equity signals. A Quill program reads a panel of
daily market data (one row per trading day, one column per asset) and defines named signals,
filters and at most one portfolio. It is small on purpose: every program is a few lines, every line
is one statement, and every statement means exactly one thing.

{code('''signal mom = rank(delta(close, 5))
filter liquid = ts_mean(volume, 20) > 1e6
portfolio long_short(mom, where=liquid, top=0.2)''')}

Read it top to bottom. `mom` ranks the assets each day by how much their close moved over five days.
`liquid` keeps the assets whose average volume over twenty days is above one million shares. The
portfolio buys the top 20% of liquid assets by `mom` and sells the bottom 20%.

## Three statements

- `signal NAME = expression` defines a numeric series: one number per asset and day.
- `filter NAME = condition` defines a condition: true or false per asset and day.
- `portfolio KIND(signal, where=filter, top=fraction)` turns a signal into weights. It comes last.

A name is defined once and used only after its definition. Comments start with `#`. A statement
may continue onto the next line inside parentheses.

## The data

{table(["field", "meaning"], [[f"`{f.name}`", f.doc] for f in FIELDS.values()])}

## The operators

There are {len(OPS)} operators. Time-series operators look back along one asset's history;
cross-sectional operators compare assets on the same day; group operators compare an asset with
its sector; element-wise operators and arithmetic work cell by cell; comparisons and logic build
conditions.

{by_category}

## Kinds of values

Quill checks kinds before it runs anything. A numeric series and a condition are different kinds:
a signal must be numeric, a filter must be a condition, `rank` takes a numeric series and
`if_else` takes a condition first. Windows are whole-number literals (`delta(close, 5)`, never
`delta(close, n)`), and `sector` is a group label that only group operators accept.

## What a program outputs

Running a program gives every signal and filter by name and, if there is a portfolio, its weights
(`portfolio`) and its daily profit (`pnl`). The answer of a program is its portfolio when it has
one, otherwise its last statement. Two programs are the same program when their answers are equal
on every panel, whatever their names and spelling.
"""
    return "overview", text


def grammar() -> tuple[str, str]:
    rules = GRAMMAR_DOC.split("\n\n", 2)[2].strip("\n")
    rules = "\n".join(line[4:] if line.startswith("    ") else line for line in rules.splitlines())
    text = f"""# The grammar of Quill

{code(rules, 'text')}

## Precedence, loosest first

{table(["level", "operators", "associativity"], [
        ["1", "`or`", "left"], ["2", "`and`", "left"], ["3", "`not`", "prefix"],
        ["4", "`>` `>=` `<` `<=` `==` `!=`", "none: `a < b < c` is an error"],
        ["5", "`+` `-`", "left"], ["6", "`*` `/`", "left"], ["7", "unary `-`", "prefix"],
        ["8", "calls, names, numbers, parentheses", ""]])}

So `close - open / 2` is `close - (open / 2)`, and `not close > open and returns > 0` is
`(not (close > open)) and (returns > 0)`. When in doubt, add parentheses; the canonical printer
removes the ones that are not needed.

## Lexical rules

- Names: letters, digits and `_`, not starting with a digit. Keywords: `signal`, `filter`,
  `portfolio`, `and`, `or`, `not`.
- Numbers: `5`, `0.2`, `.5`, `1e6`, `2.5e-3`. A minus sign in front of a number makes a negative
  literal: `signed_power(x, -1)`.
- `#` starts a comment that runs to the end of the line.
- A line break ends a statement, except inside parentheses.
- Reserved names (operators, fields, portfolio kinds, `pnl`, `where`, `top`) cannot name a signal
  or filter.

## Canonical form

Every program has one canonical spelling: one statement per line, a space around infix
operators, `, ` between arguments, numbers without trailing zeros, large numbers as `1e6` or
`1.5e6`, and only the parentheses precedence needs. The task data and the examples in this
manual are written in canonical form.
"""
    return "grammar", text


def tutorial_first_signal() -> tuple[str, str]:
    text = f"""# Tutorial 1: your first signal

A signal is a number for every asset on every day. The simplest signal is a field:

{show("signal px = close")}

Prices on their own say little: a 150 stock is not "more" than a 20 stock. Research signals compare.
The five-day change in close says how far each asset moved over a week:

{show("signal move = delta(close, 5)")}

The first five days are NaN: there is no close five days before day 0. Then `rank` turns the moves
into a position in the day's cross-section, from 0 (moved least) to 1 (moved most):

{show("signal mom = rank(delta(close, 5))")}

Here is the last day of the sample panel (seed {SAMPLE_SEED}), with the intermediate step as its own signal:

{code('''signal move = delta(close, 5)
signal mom = rank(move)''')}

{last_day_table('''signal move = delta(close, 5)
signal mom = rank(move)''')}

Ranks are comparable across days and assets, which is why most signals end in `rank`, `zscore`
or a group operator. A reversal signal is the same idea with the sign flipped:

{show("signal rev = rank(-delta(close, 5))")}

Read nested calls from the inside out: `delta(close, 5)` first, then the minus, then `rank`.
"""
    return "tutorial/01_first_signal", text


def tutorial_time_series() -> tuple[str, str]:
    text = f"""# Tutorial 2: looking back in time

Time-series operators take a series and a window `n` in trading days and look only down one
asset's own column. `ts_mean(volume, 20)` is today's twenty-day average volume for each asset:

{show("signal avg_volume = ts_mean(volume, 20)")}

## Windows are literals

The window is part of the program, written as a whole number. `ts_mean(volume, 20.0)` and
`ts_mean(volume, n)` are errors:

{code("signal s = ts_mean(volume, n)", "text")}

{code(error_of("signal s = ts_mean(volume, n)"), "text")}

## Lookback adds up

An operator with window n needs n - 1 earlier days (`delay` and `delta` need n). Nesting adds the
lookbacks, so `ts_max(delta(close, 5), 10)` is first defined on day 5 + 9 = 14:

{show("signal breakout = ts_max(delta(close, 5), 10)")}

## The rolling family

- `ts_mean`, `ts_sum`, `ts_std`, `ts_max`, `ts_min`: the usual rolling statistics.
- `decay_linear(x, n)`: a moving average that weighs today most (weights n, n-1, ..., 1).
- `ts_rank(x, n)`: where today sits in the last n days, from 0 (lowest) to 1 (highest).
- `ts_zscore(x, n)`: today's distance from the n-day mean, in n-day standard deviations.
- `ts_argmax(x, n)`, `ts_argmin(x, n)`: days since the n-day high or low.
- `ts_corr(x, y, n)`, `ts_cov(x, y, n)`: co-movement of two series over n days.

Volatility is the rolling standard deviation of returns:

{show("signal realized_vol = ts_std(returns, 20)")}

A volume surprise compares today's volume with its recent history:

{show("signal surprise = ts_zscore(volume, 10)")}

and price-volume correlation asks whether volume rises with price:

{show("signal pv = ts_corr(close, volume, 10)")}

A trend signal that weighs recent returns most:

{show("signal trend = decay_linear(returns, 10)")}
"""
    return "tutorial/02_time_series", text


def tutorial_cross_section() -> tuple[str, str]:
    source = '''signal r = returns
signal ranked = rank(returns)
signal z = zscore(returns)
signal centered = demean(returns)
signal book = scale(demean(returns))'''
    text = f"""# Tutorial 3: comparing assets on the same day

Cross-sectional operators work on one day at a time, across assets. They are how a raw number
becomes a view: "this asset is in the top fifth today".

{code(source)}

{last_day_table(source)}

- `rank` maps the day's values to [0, 1]; ties share a rank.
- `zscore` subtracts the day's mean and divides by the day's standard deviation.
- `demean` only subtracts the mean, so the day sums to zero.
- `scale` divides by the sum of absolute values, so the absolute values sum to one.
- `winsorize(x, k)` clips values beyond k standard deviations from the day's mean.

`rank` is robust to outliers, `zscore` keeps their size. A common recipe clips first, then standardizes:

{show("signal clean = zscore(winsorize(returns, 2))")}

Cross-sectional operators ignore missing assets: an asset with NaN is left out of the day's
mean, standard deviation and ranking, and stays NaN.
"""
    return "tutorial/03_cross_section", text


def tutorial_sectors() -> tuple[str, str]:
    source = '''signal raw = returns
signal sector_avg = group_mean(returns, sector)
signal neutral = group_demean(returns, sector)
signal within = group_rank(returns, sector)'''
    text = f"""# Tutorial 4: sectors and neutrality

Assets in the same sector move together. A signal that is mostly "tech went up today" is a sector
bet, not a stock pick. Group operators remove that: they compare each asset only with its own sector.

{code(source)}

{last_day_table(source)}

`group_demean(x, sector)` is `x - group_mean(x, sector)`, so these two signals are equal:

{code('''signal a = group_demean(returns, sector)
signal b = returns - group_mean(returns, sector)''')}

`sector` may only appear as the group argument. Writing it anywhere else is an error:

{code("signal s = rank(sector)", "text")}

{code(error_of("signal s = rank(sector)"), "text")}

A sector-neutral momentum signal:

{show("signal sn_mom = group_rank(delta(close, 10), sector)")}
"""
    return "tutorial/04_sectors", text


def tutorial_filters() -> tuple[str, str]:
    text = f"""# Tutorial 5: filters and conditions

A filter is a condition: true or false for every asset and day. Comparisons make conditions, and
`and`, `or` and `not` combine them.

{show("filter liquid = ts_mean(volume, 20) > 1e6")}

{show("filter up_day = close > open")}

{show("filter calm_and_liquid = ts_std(returns, 20) < 0.02 and volume > 5e5")}

A comparison with a missing value is false, so a filter never admits an asset we know nothing
about. On the first days, where `ts_mean(volume, 20)` is NaN, `liquid` is false for every asset.

## Conditions are not numbers

A filter must be a condition and a signal must be a number; Quill does not convert between them
silently:

{code("signal s = close > open", "text")}

{code(error_of("signal s = close > open"), "text")}

To turn a condition into a number, say which numbers you mean with `if_else`:

{show("signal up = if_else(close > open, 1, 0)")}

`if_else(cond, a, b)` also picks between two series:

{show("signal gated = if_else(volume > ts_mean(volume, 20), returns, 0)")}

Comparisons do not chain. Write the two comparisons and join them:

{code("filter mid = 0.2 < rank(close) < 0.8", "text")}

{code(error_of("filter mid = 0.2 < rank(close) < 0.8"), "text")}

{show("filter mid = rank(close) > 0.2 and rank(close) < 0.8")}
"""
    return "tutorial/05_filters", text


def tutorial_portfolios() -> tuple[str, str]:
    source = '''signal value = rank(-pct_change(close, 20))
filter liquid = ts_mean(volume, 10) > 5e5
portfolio long_short(value, where=liquid, top=0.3)'''
    text = f"""# Tutorial 6: from signal to portfolio

A portfolio statement turns a signal into weights. It is always the last statement, and a program
has at most one.

- `long_short`: +0.5/k on the k best assets and -0.5/k on the k worst, k = floor(top * eligible).
- `long_only`: 1/k on the k best assets.
- `weighted`: weights proportional to the demeaned signal, scaled to gross exposure 1.

`where=` restricts the eligible assets to a filter; `top=` sets the fraction held (default 0.2).

{code(source)}

{last_day_table(source, ["value", "liquid", "portfolio"])}

{summary(source)}

The portfolio only cares about the order of the signal, so ranking first changes nothing for
`long_short` and `long_only`: `portfolio long_short(delta(close, 5))` and
`portfolio long_short(rank(delta(close, 5)))` hold the same positions. For `weighted` the size of
the signal matters, so there `rank` and `zscore` give different books.

The default `top` is 0.2, so these two programs are the same program:

{code('''signal s = rank(returns)
portfolio long_short(s)''')}

{code('''signal s = rank(returns)
portfolio long_short(s, top=0.2)''')}

Options are named and come after the signal. `long_short` takes `top` up to 0.5, `long_only` up
to 1, and `weighted` takes no `top`:

{code("portfolio weighted(rank(returns), top=0.2)", "text")}

{code(error_of("portfolio weighted(rank(returns), top=0.2)"), "text")}
"""
    return "tutorial/06_portfolios", text


def tutorial_missing_data() -> tuple[str, str]:
    text = """# Tutorial 7: missing data

Real panels have holes: an asset lists late, a price is missing. Quill writes every missing value
as NaN and follows four rules.

1. Element-wise operators and arithmetic: NaN in, NaN out. Division by zero and the log of a
   non-positive number give NaN too, never infinity.
2. Time-series operators: a window is computed only when all its days are known. The first
   n - 1 days (n for `delay`, `delta`, `pct_change`) are NaN, and so is any window that touches a
   NaN.
3. Cross-sectional and group operators: a missing asset is left out of the day's statistic and
   stays NaN in the result. A day with one known asset ranks it 0.5.
4. Conditions: a comparison with a NaN is false (`!=` too). `not` of such a comparison is true,
   because `not` only negates the condition.

Portfolios skip assets whose signal is NaN, and a day with too few eligible assets holds nothing.

Two programs are only the same program when their NaNs are in the same places. These differ on
the first day, where `returns` is NaN but the filled version is 0:

```text
signal a = returns
signal b = if_else(returns > 0, returns, 0) + if_else(returns < 0, returns, 0)
```

`if_else` takes `b` wherever the condition is false, including where it is false because of a
missing value.
"""
    return "tutorial/07_missing_data", text


ERROR_CASES = [
    ("a missing closing parenthesis", "signal mom = rank(delta(close, 5)"),
    ("a missing comma", "signal mom = delta(close 5)"),
    ("a misspelt operator", "signal mom = rnk(delta(close, 5))"),
    ("too few arguments", "signal mom = delta(close)"),
    ("too many arguments", "signal mom = rank(close, 5)"),
    ("a window that is not a whole number", "signal mom = delta(close, 2.5)"),
    ("a window that is too small", "signal v = ts_std(returns, 1)"),
    ("a name used before it is defined", "signal b = rank(a)\nsignal a = delta(close, 5)"),
    ("a misspelt name", "signal mom = rank(delta(close, 5))\nportfolio long_short(mon)"),
    ("a statement without a keyword", "mom = rank(delta(close, 5))"),
    ("a condition where a number is needed", "signal s = rank(close > open)"),
    ("a number where a condition is needed", "filter f = ts_mean(volume, 20)"),
    ("a name defined twice", "signal s = rank(close)\nsignal s = rank(open)"),
    ("a reserved name", "signal volume = ts_mean(volume, 5)"),
    ("the ternary operator of other languages", "signal s = close > open ? 1 : 0"),
    ("a portfolio that is not last", "signal s = rank(close)\nportfolio long_only(s)\nfilter f = close > 0"),
    ("an unknown portfolio option", "signal s = rank(close)\nportfolio long_short(s, bottom=0.2)"),
    ("a top outside its range", "signal s = rank(close)\nportfolio long_short(s, top=0.8)"),
    ("an infix operator called by name", "signal s = sub(close, open)"),
    ("a chained comparison", "filter f = 10 < close < 100"),
]


def tutorial_errors() -> tuple[str, str]:
    parts = ["""# Tutorial 8: reading error messages

Quill checks a whole program before it runs any of it. An error names the line and the column
(both counted from 1), says what was expected, and shows the line with a caret under the spot.
Most messages also say what to write instead. These are the messages you will meet most, exactly
as the parser prints them."""]
    for what, source in ERROR_CASES:
        parts.append(f"## {what[0].upper() + what[1:]}")
        parts.append(code(source, "text"))
        parts.append(code(error_of(source), "text"))
    return "tutorial/08_errors", "\n\n".join(parts) + "\n"


EQUIVALENT = [
    ("rank(delta(close, 5))", "rank(close - delay(close, 5))", "delta is the difference with the delayed series"),
    ("returns * 2", "returns + returns", "doubling is adding a series to itself"),
    ("pct_change(close, 1)", "returns", "returns is the one-day percent change of close"),
    ("group_demean(returns, sector)", "returns - group_mean(returns, sector)", "demeaning subtracts the mean"),
    ("-rank(close)", "0 - rank(close)", "negation is subtraction from zero"),
    ("ts_sum(returns, 5) / 5", "ts_mean(returns, 5)", "a mean is a sum over a count"),
]
DIFFERENT = [
    ("rank(delta(close, 5))", "rank(delta(close, 6))", "a different window is a different signal"),
    ("rank(delta(close, 5))", "delta(close, 5)", "ranking changes the values"),
    ("ts_mean(volume, 20) > 1e6", "ts_mean(volume, 20) > 1e5", "a different threshold keeps other assets"),
    ("max(returns, 0)", "if_else(returns > 0, returns, 0)", "the same numbers, but not the same NaNs (see below)"),
]


def tutorial_equivalence() -> tuple[str, str]:
    parts = ["""# Tutorial 9: when are two programs the same?

Quill judges a program by what it computes, not by how it is spelt. Two programs are the same when
their answers (the portfolio, else the last statement) are equal on every panel, cell by cell,
with NaN in the same places. Names do not matter. These pairs were checked by running both sides
on three random panels."""]
    for group, verdict_word in ((EQUIVALENT, "the same"), (DIFFERENT, "different")):
        parts.append(f"## Programs that are {verdict_word}")
        for left, right, why in group:
            word_left = "filter" if any(c in left for c in "<>") else "signal"
            equal = answers_equal(answer(f"{word_left} a = {left}"), answer(f"{word_left} b = {right}"))
            parts.append(code(f"{word_left} a = {left}\n{word_left} b = {right}"))
            verdict = "Equal on every verification panel" if equal else "Not equal on the verification panels"
            parts.append(f"{verdict}: {why}.")
    parts.append("`max(returns, 0)` is NaN where `returns` is NaN, but the `if_else` version takes 0 there, "
                 "because a comparison with NaN is false. Same numbers, different NaNs, so different programs.")
    return "tutorial/09_equivalence", "\n\n".join(parts) + "\n"


def style_guide() -> tuple[str, str]:
    text = """# Quill style guide

Programs are read far more often than they are written. These conventions keep them readable and
make two people's versions of the same idea look alike.

## Names

- Name signals for what they mean, not how they are computed: `mom`, `rev`, `value`, `realized_vol`,
  not `rank_delta_close_5`.
- Name filters for the assets they keep: `liquid`, `tradable`, `calm`.
- Use lower case and underscores. Never reuse a name: Quill forbids it, and a reader would too.

## Layout

- One statement per line; signals first, then filters, then the portfolio.
- A space around infix operators and after commas: `close / delay(close, 5) - 1`.
- Write numbers plainly: `0.2`, `20`, `1e6`, `1.5e6`. No `20.0`, no `1000000`.
- Parentheses only where precedence needs them. `(close - open) / open` needs them;
  `(close / open) - 1` does not.
- A long expression may break across lines inside parentheses, but prefer an intermediate signal.

## Structure

- End a signal in a cross-sectional or group operator (`rank`, `zscore`, `group_rank`, ...) so that
  its values are comparable across days.
- Prefer the named operator to its spelled-out form: `delta(close, 5)` over `close - delay(close, 5)`,
  `pct_change(close, 20)` over `close / delay(close, 20) - 1`. They compute the same thing, but
  the named one says what you mean.
- Keep windows to the common set (1, 2, 3, 5, 10, 20) unless there is a reason.
- Split a deep expression into named signals once it nests more than three levels.
- Keep the lookback short: every window adds warm-up days where the signal is NaN.
- Filters are for eligibility (liquidity, data quality), not for the view itself; the view
  belongs in the signal.

## Good and bad

```quill
signal mom = rank(delta(close, 5))
filter liquid = ts_mean(volume, 20) > 1e6
portfolio long_short(mom, where=liquid, top=0.2)
```

```text
signal x=rank(close-delay(close,5.0))   # spacing, a float window (an error), an unhelpful name
```
"""
    return "style_guide", text


def request_guide() -> tuple[str, str]:
    text = """# From a request to a program

Research requests arrive in English. Translating one is mechanical once you find the structure:

1. Find the statements. "Define a signal", "create a filter", "build a long-short portfolio": one
   statement each, in the order they are asked for, with the names the request gives.
2. Find the outermost operation of each expression. In "the cross-sectional rank of the 5-day
   change in close", the outermost is "the cross-sectional rank of", so the expression is
   `rank(...)`, and what follows "of" is its argument.
3. Recurse into the argument: "the 5-day change in close" is `delta(close, 5)`.
4. Copy numbers exactly as written: windows ("5-day", "over 20 days", "5 days ago"), thresholds
   ("above 1.2e6"), fractions ("top=0.3", "the top 30%" is `top=0.3`).
5. Parenthesized parts of a request are one operand: "(close minus open) divided by volume" is
   `(close - open) / volume`.

## Worked translations

| request | program |
|---|---|
| the 5-day change in close, ranked across assets | `signal s = rank(delta(close, 5))` |
| the cross-sectional z-score of the 20-day average of returns | `signal s = zscore(ts_mean(returns, 20))` |
| the 10-day time-series rank of volume | `signal s = ts_rank(volume, 10)` |
| keep assets whose 20-day average volume is above 1e6 | `filter f = ts_mean(volume, 20) > 1e6` |
| returns demeaned within each sector | `signal s = group_demean(returns, sector)` |
| the larger of returns and 0 | `signal s = max(returns, 0)` |
| returns when close is above open, otherwise 0 | `signal s = if_else(close > open, returns, 0)` |
| close 5 days ago | `signal s = delay(close, 5)` |
| the ratio of close to open | `signal s = close / open` |
| a long-only portfolio on s, holding the top 10% | `portfolio long_only(s, top=0.1)` |
| a long-short portfolio on s, restricted to liquid | `portfolio long_short(s, where=liquid)` |

## Words and the operators they mean

- "change", "difference between x and its value n days ago", "delta": `delta`
- "n days ago", "lagged", "lag": `delay`
- "percent change", "return over n days": `pct_change`
- "average", "moving average", "mean over": `ts_mean`; "linearly decayed", "linearly weighted": `decay_linear`
- "volatility", "standard deviation over": `ts_std`
- "ranked across assets", "cross-sectional rank", "percentile rank": `rank`
- "time-series rank", "where today ranks within its last n days": `ts_rank`
- "standardized across assets", "z-score across the universe": `zscore`; "n-day z-score": `ts_zscore`
- "sector-neutral", "minus its sector average": `group_demean`; "within its sector": `group_rank`
- "is above", "exceeds", "greater than": `>`; "at least": `>=`; "below", "under": `<`; "at most": `<=`
"""
    return "request_guide", text


def guide_pages() -> list[tuple[str, str]]:
    return [overview(), grammar(), tutorial_first_signal(), tutorial_time_series(), tutorial_cross_section(),
            tutorial_sectors(), tutorial_filters(), tutorial_portfolios(), tutorial_missing_data(),
            tutorial_errors(), tutorial_equivalence(), style_guide(), request_guide()]
