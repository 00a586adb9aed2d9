"""Compare two models on one KPI suite: paired differences per KPI (and per slice), no floors, no verdict.

``weightsmith eval compare A B --suite S`` answers "is B better than A here, and by how much?"
the way the quickstart's ablation does, for any two models: both are evaluated on the same
examples (a stored run of the exact suite on a version is reused), and each KPI gets

- the two KPI values with their 95% intervals, as their runs report them;
- the paired difference ``B − A``: the mean of the per-example score differences (for a
  ``pass_rate`` KPI, of the pass/fail outcomes; for perplexity, of each text's mean NLL per
  token), with a paired-bootstrap 95% interval;
- a paired test: McNemar's exact test when both models' scores are pass/fail, else the paired
  bootstrap's p-value (:func:`weightsmith.evals.stats.paired_difference`);
- ``better``: ``"a"`` or ``"b"`` when the test is significant at ``alpha`` (the KPI's direction
  says which way is better), else None.

Unlike a gate (:mod:`weightsmith.evals.gate`) nothing is judged against targets and nothing
is stored besides the eval runs themselves.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from weightsmith.errors import UserError
from weightsmith.evals.run import (
    KpiOutcome,
    PreparedSuite,
    evaluate,
    get_run,
    kpi_summary,
    load_outcomes,
    prepare_suite,
    reusable_run,
    store_pending_datasets,
    store_run,
)
from weightsmith.evals.stats import paired_difference
from weightsmith.evals.suite import Kpi, Suite, load_suite
from weightsmith.workspace import Workspace

ALPHA = 0.05


def _num(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)


def paired_scores(kpi: Kpi, a: list[dict], b: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Both models' scores on the examples they share (by position), as the KPI compares them.

    Args:
        kpi: gives ``aggregate`` and ``pass_threshold``: a ``pass_rate`` KPI compares pass/fail outcomes.
        a, b: each model's examples (``{"position", "score", ...}``); unscored ones are left out.

    Returns:
        ``(a_scores, b_scores)``, aligned, in position order.
    """
    first = {e["position"]: e["score"] for e in a if e["score"] is not None}
    second = {e["position"]: e["score"] for e in b if e["score"] is not None}
    positions = sorted(set(first) & set(second))
    x = np.array([first[p] for p in positions], dtype=float)
    y = np.array([second[p] for p in positions], dtype=float)
    if kpi.aggregate == "pass_rate":
        x, y = (x >= kpi.pass_threshold).astype(float), (y >= kpi.pass_threshold).astype(float)
    return x, y


def compare_examples(kpi: Kpi, a: list[dict], b: list[dict], *, alpha: float = ALPHA) -> dict[str, Any]:
    """The paired difference ``B − A`` on one KPI's shared examples.

    Returns:
        ``{"n", "diff", "ci": [low, high], "p_value", "test", "method", "b_better_on", "a_better_on",
        "better": "a" | "b" | None}``; ``b_better_on`` counts the examples where B did better
        (higher or lower, as the KPI's direction says). With no shared example every number is None.
    """
    x, y = paired_scores(kpi, a, b)
    if x.size == 0:
        return {"n": 0, "diff": None, "ci": [None, None], "p_value": None, "test": None, "method": None,
                "b_better_on": 0, "a_better_on": 0, "better": None}
    result = paired_difference(y, x, seed=0, mcnemar_exact=True)
    higher = kpi.direction == "higher"
    b_better, a_better = (result["higher"], result["lower"]) if higher else (result["lower"], result["higher"])
    p_value = _num(result["p_value"])
    better = None
    if p_value is not None and p_value < alpha and result["diff"] != 0:
        b_ahead = result["diff"] > 0 if higher else result["diff"] < 0
        better = "b" if b_ahead else "a"
    return {
        "n": result["n"], "diff": _num(result["diff"]), "ci": [_num(c) for c in result["ci"]], "p_value": p_value,
        "test": result["test"], "method": result["method"], "b_better_on": b_better, "a_better_on": a_better,
        "better": better,
    }


def compare_outcomes(a: list[KpiOutcome], b: list[KpiOutcome], suite: Suite | None = None, *,
                     alpha: float = ALPHA, kpis: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Per KPI (and per slice of a sliced KPI): both values and the paired difference ``B − A``.

    Args:
        a, b: the two models' outcomes on the same suite.
        suite: the KPI definitions to compare by (``slice_by``, ``pass_threshold``); default: B's own.
        kpis: only these KPIs, in this order (default: every KPI both runs have, in B's order).
    """
    from weightsmith.evals.rows import examples_by_slice

    first = {o.kpi.name: o for o in a}
    second = {o.kpi.name: o for o in b}
    names = kpis if kpis is not None else [name for name in second if name in first]
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        if name not in first or name not in second:
            raise UserError(f"KPI '{name}' is not in both runs; they have: {', '.join(n for n in second if n in first)}.")
        kpi = suite.kpis[name] if suite is not None and name in suite.kpis else second[name].kpi
        oa = KpiOutcome(**{**first[name].__dict__, "kpi": kpi})
        ob = KpiOutcome(**{**second[name].__dict__, "kpi": kpi})
        value_a, value_b = _num(oa.value), _num(ob.value)
        entry = {
            "metric": kpi.metric, "aggregate": kpi.aggregate, "direction": kpi.direction, "retention": kpi.retention,
            "a": _value(kpi_summary(oa)), "b": _value(kpi_summary(ob)),
            "value_diff": value_b - value_a if value_a is not None and value_b is not None else None,
            **compare_examples(kpi, oa.examples, ob.examples, alpha=alpha),
        }
        if kpi.slice_by:
            slices_a = examples_by_slice(kpi, oa.examples)
            slices_b = examples_by_slice(kpi, ob.examples)
            sa, sb = entry["a"].get("slices") or {}, entry["b"].get("slices") or {}
            entry["slice_by"] = kpi.slice_by
            entry["slices"] = {
                label: {"a": sa.get(label), "b": sb.get(label),
                        **compare_examples(kpi, slices_a.get(label, []), examples, alpha=alpha)}
                for label, examples in slices_b.items()
            }
        out[name] = entry
    return out


def _value(summary: dict[str, Any]) -> dict[str, Any]:
    keep = ("value", "ci", "n", "slices")
    return {k: summary[k] for k in keep if k in summary}


# -- models --------------------------------------------------------------------------------------
def _run_for(ws: Workspace, prepared: PreparedSuite, model: dict, device: str | None, reuse: bool) -> tuple[int | None, list[KpiOutcome], dict | None]:
    """``(stored run id or None, outcomes, timing to store them with or None)``."""
    if reuse and model.get("id") is not None:
        with ws.session() as s:
            run = reusable_run(s, ws, prepared.hash, model["id"])
            if run is not None:
                return run.id, load_outcomes(s, run), None
    outcomes, timing = evaluate(ws, prepared, model, device)
    return None, outcomes, timing


def compare_models(
    ws: Workspace,
    suite: str | Path | dict | Suite,
    a_ref: str,
    b_ref: str,
    *,
    device: str | None = None,
    reuse: bool = True,
    alpha: float = ALPHA,
    on_start=None,
) -> dict[str, Any]:
    """Evaluate ``a_ref`` and ``b_ref`` on ``suite`` (reusing stored runs) and compare them KPI by KPI.

    Args:
        suite: a suite YAML path, a parsed mapping, or a loaded Suite.
        a_ref, b_ref: the models: ``NAME@vN``, ``NAME@ALIAS``, ``NAME`` (newest) or a model folder.
            Differences are ``B − A``.
        device: overrides the suite's device.
        reuse: stand a stored run of the exact suite (same KPI definitions, same data) on the same
            version in for a new one; a model folder is always evaluated.
        alpha: the significance level ``better`` uses.
        on_start: called once the suite, its data and both models are checked, before any generation.

    Returns:
        ``{"suite", "suite_hash", "alpha", "a": {"model", "run", "reused"}, "b": {...},
        "kpis": {name: {"metric", "direction", "a": {"value", "ci", "n"}, "b": {...}, "value_diff",
        "n", "diff", "ci", "p_value", "test", "method", "b_better_on", "a_better_on", "better",
        "slices"?}}}``. Both runs are stored (with every example), so ``eval export`` reads them.

    Raises:
        UserError: the suite or either model is not usable, or A and B are the same version.
    """
    from weightsmith.workspace.registry import resolve_model

    suite = load_suite(suite)
    model_a, model_b = resolve_model(ws, a_ref), resolve_model(ws, b_ref)
    if model_a.get("id") is not None and model_a.get("id") == model_b.get("id"):
        raise UserError(f"A and B are the same version ({model_a['ref']}); compare two different models.")
    prepared = prepare_suite(ws, suite)
    if on_start is not None:
        on_start()
    # Computed outside any database session: a run can take minutes.
    run_a, outcomes_a, timing_a = _run_for(ws, prepared, model_a, device, reuse)
    run_b, outcomes_b, timing_b = _run_for(ws, prepared, model_b, device, reuse)
    store_pending_datasets(ws, prepared)
    with ws.session() as s:
        stored_a = run_a if run_a is not None else store_run(s, ws, prepared, outcomes_a, model_a, **timing_a).id
        stored_b = run_b if run_b is not None else store_run(s, ws, prepared, outcomes_b, model_b, **timing_b).id
    return {
        "suite": suite.name,
        "suite_hash": prepared.hash,
        "alpha": alpha,
        "a": {"model": model_a["ref"], "run": stored_a, "reused": run_a is not None},
        "b": {"model": model_b["ref"], "run": stored_b, "reused": run_b is not None},
        "kpis": compare_outcomes(outcomes_a, outcomes_b, suite, alpha=alpha),
        **({"warnings": prepared.warnings} if prepared.warnings else {}),
    }


def compare_runs(ws: Workspace, run_a: int, run_b: int, *, kpis: list[str] | None = None,
                 alpha: float = ALPHA) -> dict[str, Any]:
    """Compare two stored runs of the same suite (same KPI definitions on the same data): ``B − A``.

    The KPIs are compared by run B's suite (its ``slice_by`` and thresholds). Returns
    :func:`compare_models`' document, with both runs ``reused``.

    Raises:
        NotFound: a run is not in this project.
        UserError: the runs are of different suites, or of a suite whose KPIs or data changed between them.
    """
    first, second = get_run(ws, run_a), get_run(ws, run_b)
    if first.suite_hash != second.suite_hash:
        raise UserError(
            f"runs {run_a} ({first.suite_name}) and {run_b} ({second.suite_name}) are not of the same suite on the "
            "same data, so their examples do not pair; compare runs of one suite, or compare the models with --suite."
        )
    with ws.session() as s:
        first, second = s.merge(first), s.merge(second)
        outcomes_a, outcomes_b = load_outcomes(s, first), load_outcomes(s, second)
        suite = Suite.model_validate(second.suite)
        doc = {
            "suite": second.suite_name,
            "suite_hash": second.suite_hash,
            "alpha": alpha,
            "a": {"model": first.model_ref, "run": first.id, "reused": True},
            "b": {"model": second.model_ref, "run": second.id, "reused": True},
        }
    doc["kpis"] = compare_outcomes(outcomes_a, outcomes_b, suite, alpha=alpha, kpis=kpis)
    return doc
