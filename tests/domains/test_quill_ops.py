"""Every Quill operator on a tiny hand-made panel, against values computed independently.

The expected values below use plain Python loops and textbook formulas, never the kernels, so a
kernel bug cannot hide behind itself.
"""

import math
import statistics

import numpy as np
import pytest

from weightsmith.domains.quill import OPS, evaluate_expr, panel_from_arrays, run

NAN = float("nan")
CLOSE = [[10, 20, 30, 40], [11, 19, 33, 40], [12, 21, 30, 44], [11, 22, 27, 48], [13, 20, 30, 50], [14, 23, 36, 45]]
OPEN = [[9, 21, 30, 41], [10, 20, 31, 40], [12, 20, 32, 43], [12, 21, 28, 47], [12, 21, 29, 49], [13, 22, 35, 47]]
VOLUME = [[100, 200, 300, 400], [120, 180, 330, 390], [140, NAN, 310, 420],
          [110, 210, 290, 450], [130, 190, 300, 480], [150, 230, 350, 460]]
SECTOR = [0, 0, 1, 1]


@pytest.fixture(scope="module")
def panel():
    high = np.maximum(CLOSE, OPEN) + 1.0
    low = np.minimum(CLOSE, OPEN) - 1.0
    return panel_from_arrays(SECTOR, close=CLOSE, open=OPEN, high=high, low=low, volume=VOLUME)


C, O, V = np.array(CLOSE, float), np.array(OPEN, float), np.array(VOLUME, float)
T, N = C.shape


def each_cell(fn):
    return np.array([[fn(t, i) for i in range(N)] for t in range(T)], dtype=float)


def rolling(x, n, fn):
    """fn(list of the n values ending at t) or NaN before a full window / when one is NaN."""
    def cell(t, i):
        if t < n - 1:
            return NAN
        window = [x[s][i] for s in range(t - n + 1, t + 1)]
        return NAN if any(math.isnan(v) for v in window) else fn(window)
    return each_cell(cell)


def rolling2(x, y, n, fn):
    def cell(t, i):
        if t < n - 1:
            return NAN
        wx = [x[s][i] for s in range(t - n + 1, t + 1)]
        wy = [y[s][i] for s in range(t - n + 1, t + 1)]
        return NAN if any(math.isnan(v) for v in wx + wy) else fn(wx, wy)
    return each_cell(cell)


def lagged(x, n):
    return each_cell(lambda t, i: x[t - n][i] if t >= n else NAN)


def across(x, fn, groups=None):
    """fn(value, the valid values of its day (and group)) per cell; NaN stays NaN."""
    groups = groups or [0] * N
    def cell(t, i):
        if math.isnan(x[t][i]):
            return NAN
        peers = [x[t][j] for j in range(N) if groups[j] == groups[i] and not math.isnan(x[t][j])]
        return fn(x[t][i], peers)
    return each_cell(cell)


def pct_rank(v, peers):
    if len(peers) == 1:
        return 0.5
    less = sum(p < v for p in peers)
    ties = sum(p == v for p in peers) - 1
    return (less + 0.5 * ties) / (len(peers) - 1)


def days_since(pick):
    def fn(window):
        best = pick(window)
        return min(len(window) - 1 - k for k, v in enumerate(window) if v == best)
    return fn


def ts_rank_of(window):
    today = window[-1]
    return (sum(v < today for v in window) + 0.5 * (sum(v == today for v in window) - 1)) / (len(window) - 1)


def corr(wx, wy):
    mx, my = statistics.fmean(wx), statistics.fmean(wy)
    sxy = sum((a - mx) * (b - my) for a, b in zip(wx, wy))
    return sxy / math.sqrt(sum((a - mx) ** 2 for a in wx) * sum((b - my) ** 2 for b in wy))


def winsor(k):
    def fn(v, peers):
        m, s = statistics.fmean(peers), statistics.pstdev(peers)
        return min(max(v, m - k * s), m + k * s)
    return fn


D1 = C - lagged(C, 1)  # delta(close, 1), written out

CASES = {
    "delay": ("delay(close, 2)", lagged(C, 2)),
    "delta": ("delta(close, 3)", C - lagged(C, 3)),
    "pct_change": ("pct_change(close, 2)", C / lagged(C, 2) - 1),
    "ts_mean": ("ts_mean(volume, 2)", rolling(V, 2, statistics.fmean)),
    "ts_sum": ("ts_sum(close, 3)", rolling(C, 3, sum)),
    "ts_std": ("ts_std(close, 3)", rolling(C, 3, statistics.stdev)),
    "ts_max": ("ts_max(close, 3)", rolling(C, 3, max)),
    "ts_min": ("ts_min(volume, 3)", rolling(V, 3, min)),
    "ts_argmax": ("ts_argmax(close, 3)", rolling(C, 3, days_since(max))),
    "ts_argmin": ("ts_argmin(close, 3)", rolling(C, 3, days_since(min))),
    "ts_rank": ("ts_rank(close, 4)", rolling(C, 4, ts_rank_of)),
    "ts_zscore": ("ts_zscore(close, 3)",
                  rolling(C, 3, lambda w: (w[-1] - statistics.fmean(w)) / statistics.stdev(w))),
    "ts_corr": ("ts_corr(close, volume, 3)", rolling2(C, V, 3, corr)),
    "ts_cov": ("ts_cov(close, open, 3)", rolling2(C, O, 3, lambda a, b: statistics.covariance(a, b))),
    "decay_linear": ("decay_linear(close, 3)", rolling(C, 3, lambda w: (w[0] + 2 * w[1] + 3 * w[2]) / 6)),
    "rank": ("rank(volume)", across(V, pct_rank)),
    "zscore": ("zscore(volume)",
               across(V, lambda v, p: (v - statistics.fmean(p)) / statistics.pstdev(p))),
    "demean": ("demean(volume)", across(V, lambda v, p: v - statistics.fmean(p))),
    "scale": ("scale(delta(close, 1))", across(D1, lambda v, p: v / sum(abs(q) for q in p))),
    "winsorize": ("winsorize(close, 1)", across(C, winsor(1))),
    "group_demean": ("group_demean(volume, sector)", across(V, lambda v, p: v - statistics.fmean(p), SECTOR)),
    "group_rank": ("group_rank(close, sector)", across(C, pct_rank, SECTOR)),
    "group_mean": ("group_mean(volume, sector)", across(V, lambda v, p: statistics.fmean(p), SECTOR)),
    "abs": ("abs(delta(close, 1))", np.abs(D1)),
    "log": ("log(close - 12)", each_cell(lambda t, i: math.log(CLOSE[t][i] - 12) if CLOSE[t][i] > 12 else NAN)),
    "sqrt": ("sqrt(close - 12)", each_cell(lambda t, i: math.sqrt(CLOSE[t][i] - 12) if CLOSE[t][i] >= 12 else NAN)),
    "sign": ("sign(delta(close, 1))", np.sign(D1)),
    "signed_power": ("signed_power(delta(close, 1), 2)", np.sign(D1) * D1 ** 2),
    "max": ("max(close, open)", each_cell(lambda t, i: max(CLOSE[t][i], OPEN[t][i]))),
    "min": ("min(close, open)", each_cell(lambda t, i: min(CLOSE[t][i], OPEN[t][i]))),
    "if_else": ("if_else(volume > 200, close, -1)",
                each_cell(lambda t, i: CLOSE[t][i] if VOLUME[t][i] > 200 else -1)),
    "add": ("close + open", C + O),
    "sub": ("close - open", C - O),
    "mul": ("close * 2", C * 2),
    "div": ("close / delta(close, 1)", each_cell(lambda t, i: CLOSE[t][i] / D1[t][i] if D1[t][i] else NAN)),
    "neg": ("-close", -C),
    "gt": ("volume > 200", each_cell(lambda t, i: VOLUME[t][i] > 200)),
    "ge": ("close >= 30", each_cell(lambda t, i: CLOSE[t][i] >= 30)),
    "lt": ("volume < 200", each_cell(lambda t, i: VOLUME[t][i] < 200)),
    "le": ("close <= open", each_cell(lambda t, i: CLOSE[t][i] <= OPEN[t][i])),
    "eq": ("close == 11", each_cell(lambda t, i: CLOSE[t][i] == 11)),
    # NaN != 300 is true in IEEE arithmetic; Quill makes every comparison with NaN false.
    "ne": ("volume != 300", each_cell(lambda t, i: not math.isnan(VOLUME[t][i]) and VOLUME[t][i] != 300)),
    "and": ("close > open and volume > 200",
            each_cell(lambda t, i: CLOSE[t][i] > OPEN[t][i] and VOLUME[t][i] > 200)),
    "or": ("close > open or volume > 400", each_cell(lambda t, i: CLOSE[t][i] > OPEN[t][i] or VOLUME[t][i] > 400)),
    "not": ("not volume > 200", each_cell(lambda t, i: not VOLUME[t][i] > 200)),
}


def test_every_operator_has_a_case():
    assert set(CASES) == set(OPS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_operator_matches_independent_computation(panel, name):
    source, expected = CASES[name]
    got = evaluate_expr(source, panel)
    assert got.shape == (T, N)
    if OPS[name].returns == "mask":
        assert got.dtype == bool
        np.testing.assert_array_equal(got, expected.astype(bool))
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12, equal_nan=True)


def test_hand_computed_values(panel):
    # A few numbers worked out on paper, as a check on the independent formulas themselves.
    assert evaluate_expr("ts_mean(close, 3)", panel)[2, 0] == pytest.approx(11.0)
    assert evaluate_expr("decay_linear(close, 3)", panel)[2, 2] == pytest.approx((30 + 2 * 33 + 3 * 30) / 6)
    assert evaluate_expr("rank(close)", panel)[0].tolist() == [0, 1 / 3, 2 / 3, 1]
    assert evaluate_expr("ts_argmin(close, 3)", panel)[3, 0] == 0  # 11, 12, 11: the most recent low
    assert evaluate_expr("ts_rank(close, 3)", panel)[4, 0] == 1.0  # 12, 11, 13: today is the high
    np.testing.assert_array_equal(evaluate_expr("group_mean(volume, sector)", panel)[2], [140, NAN, 365, 365])
    assert np.isnan(evaluate_expr("ts_sum(volume, 2)", panel)[2, 1])  # the window holds a NaN


def test_missing_values_stay_missing_across_assets(panel):
    ranked = evaluate_expr("rank(volume)", panel)
    assert np.isnan(ranked[2, 1])
    assert ranked[2, [0, 2, 3]].tolist() == [0, 0.5, 1]  # ranked among the 3 known assets


def test_portfolios(panel):
    out = run("signal s = close\nportfolio long_short(s, top=0.25)", panel)
    np.testing.assert_allclose(out["portfolio"][0], [-0.5, 0, 0, 0.5])
    out = run("signal s = close\nfilter f = close < 45\nportfolio long_short(s, where=f, top=0.25)", panel)
    # Day 2: asset 3 (44) is eligible; day 3: asset 3 (48) is not, so asset 2 is the long.
    np.testing.assert_allclose(out["portfolio"][2], [-0.5, 0, 0, 0.5])
    np.testing.assert_allclose(out["portfolio"][3], [-0.5, 0, 0.5, 0])
    out = run("portfolio long_only(close, top=0.5)", panel)
    np.testing.assert_allclose(out["portfolio"][0], [0, 0, 0.5, 0.5])
    out = run("portfolio weighted(close)", panel)
    np.testing.assert_allclose(out["portfolio"][0], np.array([-15, -5, 5, 15]) / 40)
    weights, returns = out["portfolio"], C[1:] / C[:-1] - 1
    np.testing.assert_allclose(out["pnl"][1:], (weights[:-1] * returns).sum(axis=1))
    assert out["pnl"][0] == 0


def test_run_outputs_every_statement(panel):
    out = run("signal a = rank(close)\nfilter f = a > 0.5\nportfolio long_short(a, where=f)", panel)
    assert list(out) == ["a", "f", "portfolio", "pnl"]
    assert out["a"].dtype == np.float64 and out["f"].dtype == bool
    again = run("signal a = rank(close)\nfilter f = a > 0.5\nportfolio long_short(a, where=f)", panel)
    for name in out:
        np.testing.assert_array_equal(out[name], again[name])


def test_no_infinities(panel):
    assert not np.isinf(evaluate_expr("close / (close - close)", panel)).any()
    assert np.isnan(evaluate_expr("log(close - close)", panel)).all()
