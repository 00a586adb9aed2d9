"""The numpy implementations behind every Quill operator and portfolio kind.

A series is a float array of shape (days, assets); a mask is a bool array of the same shape;
a group is an int array of shape (assets,). Every kernel returns a fresh array, and missing
values are NaN, never +-inf: we turn infinities into NaN so that "missing" has one spelling and
the verifier can compare NaN positions exactly.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.stats import rankdata

NAN = np.nan


def finite(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    return np.where(np.isfinite(x), x, NAN)


def _errstate():
    return np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore")


# ---- time series: each looks only at the same asset's past ----------------------------------


def shift(x: np.ndarray, n: int) -> np.ndarray:
    out = np.full_like(x, NAN, dtype=float)
    if n < len(x):
        out[n:] = x[: len(x) - n]
    return out


def delay(x, n):
    return shift(x, n)


def delta(x, n):
    return x - shift(x, n)


def pct_change(x, n):
    with _errstate():
        return finite(x / shift(x, n) - 1.0)


def _rolling(x: np.ndarray, n: int, reduce) -> np.ndarray:
    """Apply ``reduce`` to each trailing window of ``n`` days (last axis = the window).

    The first n-1 days have no full window and are NaN; a window holding a NaN gives NaN
    (reducers built on np.mean/np.max propagate it; the others mask it explicitly).
    """
    out = np.full(x.shape, NAN)
    if n <= len(x):
        with _errstate():
            out[n - 1:] = reduce(sliding_window_view(x, n, axis=0))
    return finite(out)


def _window_has_nan(w: np.ndarray) -> np.ndarray:
    return np.isnan(w).any(axis=-1)


def ts_mean(x, n):
    return _rolling(x, n, lambda w: w.mean(axis=-1))


def ts_sum(x, n):
    return _rolling(x, n, lambda w: w.sum(axis=-1))


def ts_std(x, n):
    return _rolling(x, n, lambda w: w.std(axis=-1, ddof=1))


def ts_max(x, n):
    return _rolling(x, n, lambda w: w.max(axis=-1))


def ts_min(x, n):
    return _rolling(x, n, lambda w: w.min(axis=-1))


def _days_since(w: np.ndarray, pick) -> np.ndarray:
    # Reverse the window so index 0 is today: argmax/argmin then return the most recent
    # occurrence on ties, which is "days since".
    days = pick(np.nan_to_num(w[..., ::-1], nan=0.0), axis=-1).astype(float)
    return np.where(_window_has_nan(w), NAN, days)


def ts_argmax(x, n):
    return _rolling(x, n, lambda w: _days_since(w, np.argmax))


def ts_argmin(x, n):
    return _rolling(x, n, lambda w: _days_since(w, np.argmin))


def ts_rank(x, n):
    def reduce(w):
        today = w[..., -1:]
        less = (w < today).sum(axis=-1)
        ties = (w == today).sum(axis=-1) - 1
        rank = (less + 0.5 * ties) / (n - 1)
        return np.where(_window_has_nan(w), NAN, rank)

    return _rolling(x, n, reduce)


def ts_zscore(x, n):
    with _errstate():
        return finite((x - ts_mean(x, n)) / ts_std(x, n))


def _pair_windows(x, y, n, reduce):
    out = np.full(x.shape, NAN)
    if n <= len(x):
        wx = sliding_window_view(x, n, axis=0)
        wy = sliding_window_view(y, n, axis=0)
        with _errstate():
            dx = wx - wx.mean(axis=-1, keepdims=True)
            dy = wy - wy.mean(axis=-1, keepdims=True)
            out[n - 1:] = reduce(dx, dy)
    return finite(out)


def ts_cov(x, y, n):
    return _pair_windows(x, y, n, lambda dx, dy: (dx * dy).sum(axis=-1) / (n - 1))


def ts_corr(x, y, n):
    def reduce(dx, dy):
        return (dx * dy).sum(axis=-1) / np.sqrt((dx * dx).sum(axis=-1) * (dy * dy).sum(axis=-1))

    return _pair_windows(x, y, n, reduce)


def decay_linear(x, n):
    if n > len(x):  # no full window; and a candidate's absurd window must not allocate n weights
        return np.full(x.shape, NAN)
    weights = np.arange(1, n + 1, dtype=float)  # oldest day weighs 1, today weighs n
    weights /= weights.sum()
    return _rolling(x, n, lambda w: w @ weights)


# ---- cross-section: each looks only at the same day across assets ---------------------------


def _row_mean(x: np.ndarray) -> np.ndarray:
    valid = np.isfinite(x)
    count = valid.sum(axis=1, keepdims=True)
    total = np.where(valid, x, 0.0).sum(axis=1, keepdims=True)
    with _errstate():
        return np.where(count > 0, total / count, NAN)


def _row_std(x: np.ndarray) -> np.ndarray:
    dev = x - _row_mean(x)
    return np.sqrt(_row_mean(dev * dev))


def rank(x):
    ranks = rankdata(x, axis=1, nan_policy="omit")
    count = np.isfinite(x).sum(axis=1, keepdims=True)
    with _errstate():
        scaled = (ranks - 1.0) / (count - 1.0)
    # A lone asset is neither top nor bottom: it sits in the middle.
    return finite(np.where(count == 1, np.where(np.isnan(x), NAN, 0.5), scaled))


def zscore(x):
    dev = x - _row_mean(x)
    std = _row_std(x)
    with _errstate():
        z = dev / std
    # When every asset is equal the cross-section carries no view: 0, not NaN.
    return finite(np.where(std == 0, dev * 0.0, z))


def demean(x):
    return finite(x - _row_mean(x))


def scale(x):
    gross = np.where(np.isfinite(x), np.abs(x), 0.0).sum(axis=1, keepdims=True)
    with _errstate():
        return finite(np.where(gross == 0, x * 0.0, x / gross))


def winsorize(x, k):
    mean, std = _row_mean(x), _row_std(x)
    return finite(np.clip(x, mean - k * std, mean + k * std))


def _by_group(x: np.ndarray, groups: np.ndarray, fn) -> np.ndarray:
    out = np.full(x.shape, NAN)
    for g in np.unique(groups):
        cols = groups == g
        out[:, cols] = fn(x[:, cols])
    return finite(out)


def group_demean(x, groups):
    return _by_group(x, groups, demean)


def group_rank(x, groups):
    return _by_group(x, groups, rank)


def group_mean(x, groups):
    # A missing asset stays missing, like every cross-sectional result: the sector has a mean,
    # but this asset has no value to stand in for.
    return _by_group(x, groups, lambda block: np.where(np.isnan(block), NAN, _row_mean(block)))


# ---- element-wise --------------------------------------------------------------------------


def log(x):
    with _errstate():
        return finite(np.where(x > 0, np.log(np.where(x > 0, x, 1.0)), NAN))


def sqrt(x):
    with _errstate():
        return finite(np.where(x >= 0, np.sqrt(np.abs(x)), NAN))


def signed_power(x, p):
    with _errstate():
        return finite(np.sign(x) * np.abs(x) ** p)


def divide(a, b):
    with _errstate():
        return finite(a / b)


def if_else(cond, a, b):
    return np.where(cond, a, b).astype(float)


def _compare(fn):
    # A comparison that involves a missing value is false (including '!='), so a filter never
    # admits an asset we know nothing about.
    def compare(a, b):
        with _errstate():
            return fn(a, b) & ~np.isnan(a) & ~np.isnan(b)

    return compare


gt, ge, lt, le = _compare(np.greater), _compare(np.greater_equal), _compare(np.less), _compare(np.less_equal)
eq, ne = _compare(np.equal), _compare(np.not_equal)


# ---- portfolios ------------------------------------------------------------------------------


def _eligible(signal: np.ndarray, where: np.ndarray) -> np.ndarray:
    return np.isfinite(signal) & where


def long_short(signal, where, top):
    """Per day: +0.5/k on the k highest eligible assets, -0.5/k on the k lowest."""
    weights = np.zeros(signal.shape)
    eligible = _eligible(signal, where)
    for day in range(signal.shape[0]):
        idx = np.flatnonzero(eligible[day])
        if len(idx) < 2:
            continue
        k = min(max(1, int(np.floor(top * len(idx) + 1e-9))), len(idx) // 2)
        order = idx[np.argsort(signal[day, idx], kind="stable")]
        weights[day, order[-k:]] = 0.5 / k
        weights[day, order[:k]] = -0.5 / k
    return weights


def long_only(signal, where, top):
    """Per day: 1/k on the k highest eligible assets."""
    weights = np.zeros(signal.shape)
    eligible = _eligible(signal, where)
    for day in range(signal.shape[0]):
        idx = np.flatnonzero(eligible[day])
        if len(idx) == 0:
            continue
        k = max(1, int(np.floor(top * len(idx) + 1e-9)))
        order = idx[np.argsort(signal[day, idx], kind="stable")]
        weights[day, order[-k:]] = 1.0 / k
    return weights


def weighted(signal, where, top=None):
    """Per day: weights proportional to the demeaned signal over eligible assets, gross 1."""
    eligible = _eligible(signal, where)
    masked = np.where(eligible, signal, NAN)
    return np.nan_to_num(scale(demean(masked)), nan=0.0)


def pnl(weights: np.ndarray, returns: np.ndarray) -> np.ndarray:
    """Daily profit of holding yesterday's weights over today's returns (day 0 earns 0)."""
    out = np.zeros(weights.shape[0])
    out[1:] = (weights[:-1] * np.nan_to_num(returns[1:], nan=0.0)).sum(axis=1)
    return out
