"""Statistics for KPIs and gates: confidence intervals and paired tests on per-example scores.

A gate compares a candidate with its champion on the *same* examples, so the tests here are
paired: McNemar's test for pass/fail scores, a paired bootstrap for anything numeric. Pairing
removes the example-to-example variance that both models share, which is most of it, so a
real difference shows with far fewer examples than two independent intervals would need.

Everything is deterministic: bootstraps take a ``seed``. Malformed inputs (empty, NaN,
unequal lengths) raise ``ValueError``; callers that read scores from a user's files check
those first and word the error for the user.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy import stats

# Below this many discordant pairs the chi-square approximation to McNemar's statistic is
# poor, so we use the exact binomial test (the usual textbook threshold).
MCNEMAR_EXACT_BELOW = 25


def _as_scores(values: Sequence[float], name: str = "values") -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty list of numbers (got shape {array.shape}).")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite scores; fix or drop those examples first.")
    return array


def _is_binary(array: np.ndarray) -> bool:
    return bool(np.all((array == 0) | (array == 1)))


def mean_ci(
    values: Sequence[float],
    confidence: float = 0.95,
    method: Literal["auto", "wilson", "bootstrap", "t"] = "auto",
    *,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, tuple[float, float]]:
    """The mean of per-example scores and a confidence interval around it.

    Args:
        values: one score per example.
        confidence: the interval's coverage, e.g. 0.95.
        method: ``"wilson"`` (pass/fail scores: the Wilson score interval, which stays inside
            [0, 1] and behaves at 0% and 100%, unlike the normal approximation),
            ``"bootstrap"`` (percentile bootstrap of the mean, seeded), ``"t"`` (Student-t
            interval), or ``"auto"``: Wilson when every score is 0 or 1, else bootstrap.
        n_resamples, seed: for the bootstrap.

    Returns:
        ``(mean, (low, high))``. With a single non-binary score there is no spread to measure:
        the interval is ``(nan, nan)``, which no threshold comparison passes.
    """
    scores = _as_scores(values)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence is {confidence}; it must be between 0 and 1, e.g. 0.95.")
    mean = float(scores.mean())
    if method == "auto":
        method = "wilson" if _is_binary(scores) else "bootstrap"
    if method == "wilson":
        if not _is_binary(scores):
            raise ValueError("the Wilson interval needs pass/fail scores (each 0 or 1); use 'bootstrap' or 't'.")
        interval = stats.binomtest(int(scores.sum()), scores.size).proportion_ci(confidence, method="wilson")
        return mean, (float(interval.low), float(interval.high))
    if method not in ("bootstrap", "t"):
        raise ValueError(f"unknown interval method '{method}'; use 'auto', 'wilson', 'bootstrap' or 't'.")
    if scores.size < 2:
        return mean, (float("nan"), float("nan"))
    if method == "t":
        if np.all(scores == scores[0]):
            return mean, (mean, mean)  # scipy would divide by a zero standard error
        low, high = stats.t.interval(confidence, df=scores.size - 1, loc=mean, scale=stats.sem(scores))
        return mean, (float(low), float(high))
    result = stats.bootstrap(
        (scores,),
        np.mean,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return mean, (float(result.confidence_interval.low), float(result.confidence_interval.high))


def mcnemar(candidate: Sequence[bool], baseline: Sequence[bool], *, exact: bool | None = None) -> dict:
    """McNemar's test: does the candidate pass a different share of the same examples than the baseline?

    Only the discordant examples carry information: ``b`` = examples the candidate passes and
    the baseline fails (wins), ``c`` = the other way round (losses). Under the null hypothesis
    each discordant example is a fair coin. With ``b + c < 25`` we use the exact two-sided
    binomial test (``statistic`` is then ``min(b, c)``, as statsmodels reports it); otherwise
    the chi-square statistic with continuity correction, ``(|b - c| - 1)^2 / (b + c)``, 1 d.o.f.

    Args:
        candidate, baseline: pass/fail per example, aligned (element i is the same example);
            booleans or 0/1.
        exact: True: always the exact binomial test (what ``eval compare`` reports; exact at any
            size, and cheap); False: always chi-square; None: exact below 25 discordant pairs.

    Returns:
        ``{"b", "c", "statistic", "p_value", "method": "exact" | "chi2"}``.
    """
    cand = _as_scores(candidate, "candidate")
    base = _as_scores(baseline, "baseline")
    if cand.size != base.size:
        raise ValueError(f"candidate has {cand.size} results and baseline {base.size}; they must be the same examples.")
    if not (_is_binary(cand) and _is_binary(base)):
        raise ValueError("McNemar's test needs pass/fail results (each True/False or 0/1); use paired_bootstrap.")
    cand_pass, base_pass = cand == 1, base == 1
    b = int(np.count_nonzero(cand_pass & ~base_pass))
    c = int(np.count_nonzero(~cand_pass & base_pass))
    if exact or (exact is None and b + c < MCNEMAR_EXACT_BELOW):
        # binomtest handles b + c == 0 (no discordant pairs: p = 1).
        p_value = stats.binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
        return {"b": b, "c": c, "statistic": float(min(b, c)), "p_value": float(p_value), "method": "exact"}
    statistic = (abs(b - c) - 1) ** 2 / (b + c)
    return {
        "b": b,
        "c": c,
        "statistic": float(statistic),
        "p_value": float(stats.chi2.sf(statistic, 1)),
        "method": "chi2",
    }


def paired_bootstrap(
    candidate: Sequence[float],
    baseline: Sequence[float],
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """Paired bootstrap of the mean difference ``mean(candidate - baseline)`` over the same examples.

    Each resample draws example indices with replacement and takes both models' scores of
    those examples together, so the pairing is kept. The interval is the percentile interval
    of the resampled mean differences.

    The p-value is a two-sided bootstrap test of "no mean difference": the resampled means are
    shifted to centre on 0 (the null hypothesis) and we count how often they land at least as
    far from 0 as the observed difference, ``p = (1 + #{|m* - d| >= |d|}) / (n_resamples + 1)``
    (Hall & Wilson 1991); the +1 keeps it a valid p-value that is never exactly 0.

    Args:
        candidate, baseline: one score per example, aligned.
        n_resamples: bootstrap resamples.
        confidence: the interval's coverage.
        seed: seeds the resampling.

    Returns:
        ``{"diff": observed mean difference, "ci": (low, high), "p_value"}``. With fewer than two
        examples nothing can be resampled: ``ci`` is ``(nan, nan)`` and ``p_value`` is ``nan``.
    """
    cand = _as_scores(candidate, "candidate")
    base = _as_scores(baseline, "baseline")
    if cand.size != base.size:
        raise ValueError(f"candidate has {cand.size} scores and baseline {base.size}; they must be the same examples.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence is {confidence}; it must be between 0 and 1, e.g. 0.95.")
    if n_resamples < 1:
        raise ValueError(f"n_resamples is {n_resamples}; it must be at least 1.")
    differences = cand - base
    diff = float(differences.mean())
    n = differences.size
    if n < 2:
        return {"diff": diff, "ci": (float("nan"), float("nan")), "p_value": float("nan")}

    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    # Draw the index matrix in slices so that a large suite does not need n_resamples * n ints at once.
    per_slice = max(1, 4_000_000 // n)
    for start in range(0, n_resamples, per_slice):
        count = min(per_slice, n_resamples - start)
        indices = rng.integers(0, n, size=(count, n))
        means[start : start + count] = differences[indices].mean(axis=1)

    alpha = 1 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    extreme = np.count_nonzero(np.abs(means - diff) >= abs(diff))
    p_value = (1 + extreme) / (n_resamples + 1)
    return {"diff": diff, "ci": (float(low), float(high)), "p_value": float(p_value)}


def paired_difference(
    candidate: Sequence[float],
    baseline: Sequence[float],
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    mcnemar_exact: bool | None = True,
) -> dict:
    """How the candidate's per-example scores differ from the baseline's on the same examples.

    The difference is ``mean(candidate - baseline)`` with a paired-bootstrap interval
    (:func:`paired_bootstrap`). Its test depends on the scores: pass/fail scores (every score of
    both 0 or 1) get McNemar's test (:func:`mcnemar`; exact binomial unless ``mcnemar_exact`` says
    otherwise), anything else the paired bootstrap's own p-value.

    Args:
        candidate, baseline: one score per example, aligned (element i is the same example).
        confidence, n_resamples, seed: for the bootstrap interval.
        mcnemar_exact: passed to :func:`mcnemar` as ``exact``.

    Returns:
        ``{"n", "diff", "ci": (low, high), "p_value", "test": "mcnemar" | "paired_bootstrap",
        "method": "exact" | "chi2" | "bootstrap", "higher", "lower"}``: ``higher`` counts the
        examples where the candidate scored above the baseline, ``lower`` below (for pass/fail
        scores: McNemar's discordant pairs ``b`` and ``c``).
    """
    cand = _as_scores(candidate, "candidate")
    base = _as_scores(baseline, "baseline")
    boot = paired_bootstrap(cand, base, n_resamples=n_resamples, confidence=confidence, seed=seed)
    out = {
        "n": int(cand.size), "diff": boot["diff"], "ci": boot["ci"],
        "higher": int(np.count_nonzero(cand > base)), "lower": int(np.count_nonzero(cand < base)),
    }
    if _is_binary(cand) and _is_binary(base):
        test = mcnemar(cand, base, exact=mcnemar_exact)
        return {**out, "p_value": test["p_value"], "test": "mcnemar", "method": test["method"]}
    return {**out, "p_value": boot["p_value"], "test": "paired_bootstrap", "method": "bootstrap"}
