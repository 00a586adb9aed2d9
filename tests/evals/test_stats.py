"""KPI intervals and paired gate statistics, checked against scipy and statsmodels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar as statsmodels_mcnemar
from statsmodels.stats.proportion import proportion_confint

from weightsmith.evals.stats import mcnemar, mean_ci, paired_bootstrap


def wilson_by_hand(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("k, n", [(7, 10), (0, 10), (10, 10), (1, 3), (45, 60)])
def test_wilson_interval_matches_the_formula_and_statsmodels(k, n):
    values = [1] * k + [0] * (n - k)
    mean, (low, high) = mean_ci(values)  # auto picks Wilson for 0/1 scores

    assert mean == pytest.approx(k / n)
    assert (low, high) == pytest.approx(wilson_by_hand(k, n), abs=1e-9)
    assert (low, high) == pytest.approx(proportion_confint(k, n, alpha=0.05, method="wilson"), abs=1e-9)
    assert 0 <= low <= mean <= high <= 1


def test_wilson_known_value_and_booleans():
    # 7 of 10 passed: the textbook Wilson 95% interval is (0.3968, 0.8922).
    _, (low, high) = mean_ci([True] * 7 + [False] * 3, method="wilson")
    assert (round(low, 4), round(high, 4)) == (0.3968, 0.8922)
    _, (low90, high90) = mean_ci([True] * 7 + [False] * 3, confidence=0.90)
    assert low < low90 and high90 < high


def test_bootstrap_and_t_intervals_for_numeric_scores():
    rng = np.random.default_rng(1)
    values = rng.normal(0.6, 0.2, size=200)

    mean, boot = mean_ci(values)  # auto: bootstrap for non-binary scores
    _, t_interval = mean_ci(values, method="t")
    expected_t = stats.t.interval(0.95, df=199, loc=values.mean(), scale=stats.sem(values))

    assert mean == pytest.approx(values.mean())
    assert t_interval == pytest.approx(expected_t)
    # For 200 roughly normal values the percentile bootstrap agrees with the t-interval.
    assert boot == pytest.approx(t_interval, abs=0.01)
    assert mean_ci(values)[1] == boot  # seeded: the same interval every time
    assert mean_ci(values, seed=5)[1] != boot


def test_degenerate_inputs():
    assert mean_ci([0.5, 0.5, 0.5]) == (0.5, (0.5, 0.5))
    assert mean_ci([0.5, 0.5, 0.5], method="t") == (0.5, (0.5, 0.5))
    value, (low, high) = mean_ci([0.3])
    assert value == 0.3 and math.isnan(low) and math.isnan(high)
    with pytest.raises(ValueError, match="non-empty"):
        mean_ci([])
    with pytest.raises(ValueError, match="NaN"):
        mean_ci([0.1, float("nan")])
    with pytest.raises(ValueError, match="pass/fail"):
        mean_ci([0.1, 0.9], method="wilson")


def pairs(wins: int, losses: int, both_pass: int = 5, both_fail: int = 3) -> tuple[list[bool], list[bool]]:
    """Candidate/baseline results with the given discordant counts, interleaved as real data would be."""
    rows = [(True, False)] * wins + [(False, True)] * losses + [(True, True)] * both_pass + [(False, False)] * both_fail
    order = np.random.default_rng(0).permutation(len(rows))
    return [rows[i][0] for i in order], [rows[i][1] for i in order]


@pytest.mark.parametrize("wins, losses", [(0, 0), (3, 0), (8, 2), (12, 12), (20, 4), (40, 25), (30, 10)])
def test_mcnemar_matches_statsmodels(wins, losses):
    candidate, baseline = pairs(wins, losses)
    result = mcnemar(candidate, baseline)
    exact = wins + losses < 25
    # Rows: candidate passes / fails; columns: baseline passes / fails (pairs() used 5 and 3).
    reference = statsmodels_mcnemar([[5, wins], [losses, 3]], exact=exact, correction=True)

    assert (result["b"], result["c"]) == (wins, losses)
    assert result["method"] == ("exact" if exact else "chi2")
    assert result["statistic"] == pytest.approx(float(reference.statistic))
    assert result["p_value"] == pytest.approx(float(reference.pvalue))
    if exact and wins + losses:
        assert result["p_value"] == pytest.approx(stats.binomtest(wins, wins + losses).pvalue)


def test_mcnemar_is_symmetric_and_rejects_bad_input():
    candidate, baseline = pairs(20, 4)
    forward, backward = mcnemar(candidate, baseline), mcnemar(baseline, candidate)
    assert (backward["b"], backward["c"]) == (4, 20)
    assert backward["p_value"] == pytest.approx(forward["p_value"])
    assert forward["p_value"] < 0.01
    assert mcnemar([1, 0, 1], [1, 0, 1])["p_value"] == 1.0
    with pytest.raises(ValueError, match="same examples"):
        mcnemar([True, False], [True])
    with pytest.raises(ValueError, match="pass/fail"):
        mcnemar([0.5, 1.0], [1.0, 0.0])


def test_paired_bootstrap_interval_agrees_with_scipy_paired_bootstrap():
    rng = np.random.default_rng(3)
    skill = rng.uniform(0, 1, size=150)  # example difficulty both models share
    baseline = skill + rng.normal(0, 0.1, size=150)
    candidate = skill + 0.03 + rng.normal(0, 0.1, size=150)

    ours = paired_bootstrap(candidate, baseline, n_resamples=5000, seed=0)
    reference = stats.bootstrap(
        (candidate, baseline),
        lambda c, b, axis: np.mean(c - b, axis=axis),
        paired=True,
        method="percentile",
        n_resamples=5000,
        rng=np.random.default_rng(0),
    ).confidence_interval

    width = reference.high - reference.low
    assert ours["diff"] == pytest.approx(np.mean(candidate - baseline))
    assert ours["ci"][0] == pytest.approx(reference.low, abs=0.1 * width)
    assert ours["ci"][1] == pytest.approx(reference.high, abs=0.1 * width)
    # Pairing matters: the unpaired interval would be several times wider.
    assert width < 0.1


def test_paired_bootstrap_p_value_agrees_with_the_paired_t_test():
    rng = np.random.default_rng(4)
    baseline = rng.normal(0.5, 0.3, size=300)
    shift = baseline + rng.normal(0.06, 0.3, size=300)
    same = baseline + rng.normal(0.0, 0.3, size=300)

    for candidate in (shift, same):
        ours = paired_bootstrap(candidate, baseline, n_resamples=5000)
        t_test = stats.ttest_rel(candidate, baseline)
        assert ours["p_value"] == pytest.approx(t_test.pvalue, abs=0.03)
    assert paired_bootstrap(shift, baseline)["p_value"] < 0.05 < paired_bootstrap(same, baseline)["p_value"]


def test_paired_bootstrap_edge_cases():
    assert paired_bootstrap([1.0, 0.0, 1.0], [1.0, 0.0, 1.0])["p_value"] == 1.0
    constant_gain = paired_bootstrap([1.0] * 30, [0.0] * 30, n_resamples=999)
    assert constant_gain["ci"] == (1.0, 1.0) and constant_gain["p_value"] == pytest.approx(1 / 1000)
    single = paired_bootstrap([1.0], [0.0])
    assert single["diff"] == 1.0 and math.isnan(single["p_value"])
    assert paired_bootstrap([0.2, 0.9, 0.4], [0.1, 0.5, 0.6], seed=1) == paired_bootstrap(
        [0.2, 0.9, 0.4], [0.1, 0.5, 0.6], seed=1
    )
    with pytest.raises(ValueError, match="same examples"):
        paired_bootstrap([1.0, 2.0], [1.0])
