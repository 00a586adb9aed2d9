"""Gates: may a candidate replace its baseline? Each KPI's rules, with numbers, and one verdict.

Per KPI, up to three rules:

- ``floor``: the candidate meets the KPI's ``target`` (a ceiling when lower is better);
- ``max_regression``: it is no worse than the baseline by more than ``gate.max_regression``;
- ``paired_test``: on the same examples it is not *significantly* worse (McNemar's test for
  pass/fail scores, a paired bootstrap otherwise; significance level ``gate.alpha``).

The verdict passes only if every rule does. Retention KPIs (``retention: true`` or a
``retention_suite``) are gated the same way: they are how forgetting shows. When the
baseline is an alias that has no holder yet (the first champion), only floors apply, and the
verdict says so. Both eval runs and the verdict are written in one transaction at the end;
a run of the same suite on the same version is reused unless ``reuse=False``.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any

from weightsmith.errors import NotFound, UserError, closest, shorten
from weightsmith.evals.run import (
    KpiOutcome,
    PreparedSuite,
    evaluate,
    load_outcomes,
    prepare_suite,
    reusable_run,
    run_dict,
    store_pending_datasets,
    store_run,
)
from weightsmith.evals.stats import paired_difference
from weightsmith.evals.suite import Kpi, Suite, load_suite
from weightsmith.workspace import Workspace
from weightsmith.workspace.models import EvalRun, Gate, GateRule, ModelVersion


def _num(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.4g}"


# -- rules -------------------------------------------------------------------------------------
def kpi_rules(kpi: Kpi, candidate: KpiOutcome, baseline: KpiOutcome | None) -> list[dict[str, Any]]:
    """The rules that apply to one KPI, each ``{"kpi", "rule", "value", "baseline", "threshold", "p_value", "passed", ...}``."""
    rules = []
    base_value = baseline.value if baseline is not None else None
    common = {"kpi": kpi.name, "value": _num(candidate.value), "baseline": _num(base_value), "retention": kpi.retention}
    if kpi.target is not None:
        from weightsmith.evals.run import meets

        passed = meets(kpi.direction, candidate.value, kpi.target)
        word = "at least" if kpi.direction == "higher" else "at most"
        rules.append({
            **common, "rule": "floor", "threshold": kpi.target, "p_value": None, "passed": passed,
            "detail": f"{_fmt(candidate.value)} must be {word} {_fmt(kpi.target)}",
        })
    if baseline is None:
        return rules
    allowed = kpi.max_regression(base_value) if not math.isnan(base_value) else None
    if kpi.gate.max_regression is not None:
        regression = (base_value - candidate.value) if kpi.direction == "higher" else (candidate.value - base_value)
        passed = allowed is not None and not math.isnan(regression) and regression <= allowed + 1e-12
        rules.append({
            **common, "rule": "max_regression", "threshold": _num(allowed), "p_value": None, "passed": bool(passed),
            "detail": f"{'worse' if regression > 0 else 'not worse'} by {_fmt(abs(regression))} "
            f"({kpi.direction} is better); allowed {_fmt(allowed)} ({kpi.gate.max_regression})",
        })
    if kpi.gate.paired_test:
        rules.append({**common, **_paired_test(kpi, candidate, baseline)})
    return rules


def _paired_test(kpi: Kpi, candidate: KpiOutcome, baseline: KpiOutcome) -> dict[str, Any]:
    from weightsmith.evals.compare import paired_scores

    b, c = paired_scores(kpi, baseline.examples, candidate.examples)
    out = {"rule": "paired_test", "threshold": kpi.gate.alpha}
    if c.size < 2:
        return {**out, "p_value": None, "passed": True, "detail": f"{c.size} paired example(s): nothing to test"}
    # The test eval compare reports too; a gate keeps the chi-square form from 25 discordant pairs on.
    result = paired_difference(c, b, seed=0, mcnemar_exact=None)
    higher = kpi.direction == "higher"
    p_value = result["p_value"]
    if result["test"] == "mcnemar":
        wins, losses = (result["higher"], result["lower"]) if higher else (result["lower"], result["higher"])
        worse = losses > wins
        detail = f"McNemar ({result['method']}) on {c.size} examples: {wins} better, {losses} worse"
    else:
        diff = result["diff"]
        worse = (diff < 0) if higher else (diff > 0)
        low, high = result["ci"]
        measure = "NLL/token" if kpi.aggregate == "perplexity" else "score"
        detail = f"paired bootstrap on {c.size} examples: mean {measure} difference {_fmt(diff)} [{_fmt(low)}, {_fmt(high)}]"
    significant = p_value is not None and not math.isnan(p_value) and p_value < kpi.gate.alpha
    passed = not (worse and significant)
    verdict = "significantly worse" if not passed else ("worse, not significantly" if worse else "not worse")
    return {**out, "p_value": _num(p_value), "passed": passed, "detail": f"{detail}; {verdict} (p={_fmt(p_value)}, alpha={kpi.gate.alpha})"}


# -- baseline resolution ---------------------------------------------------------------------------
def resolve_baseline(ws: Workspace, ref: str | None) -> tuple[dict | None, str | None, str | None]:
    """``(model, alias, note)``: the baseline version (None: floors only), the alias it was named by, and why.

    An alias the model has never had (a first promotion) means floors only. An alias close to
    one it has (a typo), or a model or version that does not exist, is a UserError.
    """
    from sqlalchemy import select

    from weightsmith.workspace.aliases import alias_names, alias_target, is_version_tag
    from weightsmith.workspace.models import Model
    from weightsmith.workspace.registry import resolve_model

    if ref is None:
        return None, None, "no baseline given: compared against floors only"
    name, _, tag = ref.partition("@")
    if not tag or is_version_tag(tag):
        return resolve_model(ws, ref), None, None
    with ws.session() as s:
        model = s.scalar(select(Model).where(Model.project_id == ws.project_id, Model.name == name))
        if model is None or not model.versions:
            known = s.scalars(select(Model.name).where(Model.project_id == ws.project_id)).all()
            raise UserError(f"baseline {shorten(ref)}: no model named {shorten(name)}{closest(name, known)}; 'weightsmith models list' shows them.")
        target = alias_target(s, model, tag)
        if target is not None:
            return {"path": target.path, "id": target.id, "ref": f"{name}@v{target.version}"}, tag, None
        known = alias_names(s, model)
        if difflib.get_close_matches(tag, known, n=1, cutoff=0.6):
            raise UserError(f"baseline {shorten(ref)}: model {shorten(name)} has no alias {shorten(tag)}{closest(tag, known)}; it has: {', '.join(known)}.")
    return None, tag, f"{name} has no '{tag}' yet: compared against floors only (a first {tag} can be crowned by this gate)"


# -- the verb -----------------------------------------------------------------------------------------
def _reused_run(ws: Workspace, prepared: PreparedSuite, model: dict, reuse: bool) -> tuple[int | None, list[KpiOutcome] | None]:
    if not reuse:
        return None, None
    with ws.session() as s:
        run = reusable_run(s, ws, prepared.hash, model["id"])
        return (run.id, load_outcomes(s, run)) if run is not None else (None, None)


def run_gate(
    ws: Workspace,
    suite: str | Path | dict | Suite,
    candidate_ref: str,
    baseline_ref: str | None = None,
    *,
    device: str | None = None,
    reuse: bool = True,
) -> dict[str, Any]:
    """Gate ``candidate_ref`` against ``baseline_ref`` on ``suite``; store and return the verdict.

    Args:
        suite: a suite YAML path, a parsed mapping, or a loaded Suite.
        candidate_ref: a registry version (``NAME@vN``, ``NAME@ALIAS``...).
        baseline_ref: ``NAME@ALIAS`` (usually ``NAME@champion``), ``NAME@vN``, or None for floors only.
        device: overrides the suite's device.
        reuse: use a stored run of the same suite (same KPI definitions and data) on the same version.

    Returns:
        ``{"gate", "passed", "candidate", "baseline", "baseline_ref", "alias", "floors_only", "note",
        "suite", "rules": [{"kpi", "rule", "value", "baseline", "threshold", "p_value", "passed", "detail"}],
        "runs": {"candidate", "baseline"}, "kpis": {name: {"candidate": {...}, "baseline": {...}}}}``.
        It does not raise when the gate refuses: ``passed`` says so (the CLI exits 3).
    """
    from weightsmith.workspace.registry import resolve_model

    suite = load_suite(suite)
    candidate = resolve_model(ws, candidate_ref)
    if candidate["id"] is None:
        raise UserError(f"candidate '{candidate_ref}' is a folder; gate a registry version (NAME@vN) so the verdict can promote it.")
    baseline, alias, note = resolve_baseline(ws, baseline_ref)
    if baseline is not None and baseline["id"] is None:
        raise UserError(f"baseline '{baseline_ref}' is a folder; compare against a registry version or alias.")
    prepared = prepare_suite(ws, suite)
    if baseline is None and all(k.target is None for k in suite.kpis.values()):
        raise UserError(
            f"{suite.source or 'suite'}: there is no baseline ({note.split(':')[0]}) and no KPI has a target, so this "
            "gate would check nothing; give KPIs a target: (the floor a first version must meet)."
        )

    # Compute outside any database session: a run can take minutes.
    cand_run_id, cand_outcomes = _reused_run(ws, prepared, candidate, reuse)
    cand_timing = None
    if cand_outcomes is None:
        cand_outcomes, cand_timing = evaluate(ws, prepared, candidate, device)
    base_run_id = base_outcomes = base_timing = None
    same_version = baseline is not None and baseline["id"] == candidate["id"]
    if baseline is not None and not same_version:
        base_run_id, base_outcomes = _reused_run(ws, prepared, baseline, reuse)
        if base_outcomes is None:
            base_outcomes, base_timing = evaluate(ws, prepared, baseline, device)
    elif same_version:  # e.g. re-gating the champion itself: one run serves as both
        base_run_id, base_outcomes = cand_run_id, cand_outcomes

    rules = []
    base_by_kpi = {o.kpi.name: o for o in base_outcomes or []}
    for outcome in cand_outcomes:
        # The rules come from the suite as given now (a reused run may predate a change of gate settings).
        kpi = suite.kpis[outcome.kpi.name]
        rules.extend(kpi_rules(kpi, outcome, base_by_kpi.get(kpi.name) if baseline is not None else None))
    if not rules:
        raise UserError(
            f"{suite.source or 'suite'}: no KPI has a rule to check (no target, no gate.max_regression, "
            "paired_test off); give the gate something to check."
        )
    passed = all(r["passed"] for r in rules)

    store_pending_datasets(ws, prepared)
    with ws.session() as s:
        if cand_run_id is None:
            cand_run_id = store_run(s, ws, prepared, cand_outcomes, candidate, **cand_timing).id
        if same_version:
            base_run_id = cand_run_id
        elif baseline is not None and base_run_id is None:
            base_run_id = store_run(s, ws, prepared, base_outcomes, baseline, **base_timing).id
        gate = Gate(
            project_id=ws.project_id, suite_name=suite.name, suite_hash=prepared.hash,
            candidate_version_id=candidate["id"], baseline_version_id=baseline["id"] if baseline else None,
            baseline_ref=baseline_ref, alias=alias, candidate_run_id=cand_run_id,
            baseline_run_id=base_run_id, passed=passed,
            floors_only=baseline is None, note=note,
        )
        s.add(gate)
        s.flush()
        s.add_all(GateRule(gate_id=gate.id, **{k: r[k] for k in (
            "kpi", "rule", "value", "baseline", "threshold", "p_value", "passed", "retention", "detail")}) for r in rules)
        s.flush()
        return gate_dict(s, gate)


def gate_dict(s, gate: Gate) -> dict[str, Any]:
    from sqlalchemy import select

    def ref(version_id: int | None) -> str | None:
        mv = s.get(ModelVersion, version_id) if version_id else None
        return f"{mv.model.name}@v{mv.version}" if mv else None

    rules = s.scalars(select(GateRule).where(GateRule.gate_id == gate.id).order_by(GateRule.id)).all()
    cand = run_dict(s, s.get(EvalRun, gate.candidate_run_id))
    base = run_dict(s, s.get(EvalRun, gate.baseline_run_id)) if gate.baseline_run_id else None
    return {
        "gate": gate.id,
        "passed": gate.passed,
        "candidate": ref(gate.candidate_version_id),
        "baseline": ref(gate.baseline_version_id),
        "baseline_ref": gate.baseline_ref,
        "alias": gate.alias,
        "floors_only": gate.floors_only,
        "note": gate.note,
        "suite": gate.suite_name,
        "created_at": gate.created_at.isoformat(timespec="seconds") + "Z",
        "runs": {"candidate": gate.candidate_run_id, "baseline": gate.baseline_run_id},
        "rules": [
            {
                "kpi": r.kpi, "rule": r.rule, "value": r.value, "baseline": r.baseline, "threshold": r.threshold,
                "p_value": r.p_value, "passed": r.passed, "retention": r.retention, "detail": r.detail,
            }
            for r in rules
        ],
        "kpis": {
            name: {"candidate": kpi, "baseline": base["kpis"].get(name) if base else None}
            for name, kpi in cand["kpis"].items()
        },
    }


def show_gate(ws: Workspace, gate_id: int) -> dict[str, Any]:
    with ws.session() as s:
        gate = s.get(Gate, gate_id)
        if gate is None or gate.project_id != ws.project_id:
            raise NotFound(f"no gate {gate_id} in this project.")
        return gate_dict(s, gate)
