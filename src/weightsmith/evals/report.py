"""Reports: a run (and the gate that judged it) as JSON for programs and as one HTML page for people.

The HTML page is self-contained — inline CSS and SVG, no script, font or stylesheet from
anywhere — so it can be mailed, attached to a ticket or opened offline. It shows the KPI
table (candidate against baseline, with 95% intervals), the gate's rules, a plot per KPI
(the interval chart, the KPI across the model's versions, the distribution of scores) and
the worst failing examples next to the baseline's answers.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any

from sqlalchemy import select

from weightsmith.errors import NotFound, UserError
from weightsmith.evals.run import KpiOutcome, get_run, load_outcomes, run_dict
from weightsmith.workspace import Workspace
from weightsmith.workspace.models import EvalKpiResult, EvalRun, Gate, Model, ModelVersion

WORST_EXAMPLES = 5


# -- documents --------------------------------------------------------------------------------
def history(ws: Workspace, model_name: str, *, suite: str | None = None) -> dict[str, Any]:
    """A model's KPIs across its versions: the newest run of each suite on each version, oldest version first."""
    from weightsmith.workspace.aliases import aliases_of

    with ws.session() as s:
        model = s.scalar(select(Model).where(Model.project_id == ws.project_id, Model.name == model_name))
        if model is None:
            from weightsmith.errors import closest

            known = s.scalars(select(Model.name).where(Model.project_id == ws.project_id)).all()
            raise NotFound(f"no model named '{model_name}'{closest(model_name, known)}; 'weightsmith models list' shows them.")
        query = (
            select(EvalRun, ModelVersion)
            .join(ModelVersion, EvalRun.model_version_id == ModelVersion.id)
            .where(ModelVersion.model_id == model.id)
            .order_by(ModelVersion.version, EvalRun.id)
        )
        if suite:
            query = query.where(EvalRun.suite_name == suite)
        newest: dict[tuple[int, str], tuple[EvalRun, ModelVersion]] = {}
        for run, mv in s.execute(query).all():
            newest[(mv.version, run.suite_name)] = (run, mv)  # later runs overwrite earlier ones
        rows = []
        for (_, suite_name), (run, mv) in sorted(newest.items()):
            results = s.scalars(select(EvalKpiResult).where(EvalKpiResult.run_id == run.id).order_by(EvalKpiResult.id))
            rows.append({
                "version": f"{model_name}@v{mv.version}",
                "run": run.id,
                "suite": suite_name,
                "created_at": run.finished_at.isoformat(timespec="seconds") + "Z",
                "aliases": aliases_of(s, mv),
                "kpis": {
                    r.kpi: {"value": r.value, "ci": [r.ci_low, r.ci_high], "n": r.n, "direction": r.direction,
                            "target": r.target, "met_target": r.met_target}
                    for r in results
                },
            })
        return {"model": model_name, "suites": sorted({r["suite"] for r in rows}), "versions": rows}


def _failing(outcome: KpiOutcome) -> list[dict]:
    """The examples that count as failures, worst first."""
    kpi = outcome.kpi
    scored = [e for e in outcome.examples if e["score"] is not None]
    higher = kpi.direction == "higher"
    if kpi.aggregate == "pass_rate":
        failing = [e for e in scored if (e["score"] < kpi.pass_threshold) == higher]
    elif scored and all(e["score"] in (0.0, 1.0) for e in scored):
        failing = [e for e in scored if e["score"] == (0.0 if higher else 1.0)]
    else:
        failing = scored
    return sorted(failing, key=lambda e: e["score"], reverse=not higher)


def _worst(outcome: KpiOutcome, baseline: KpiOutcome | None, limit: int) -> list[dict]:
    failing = _failing(outcome)
    if baseline is not None:
        base = {e["position"]: e for e in baseline.examples}
        sign = 1 if outcome.kpi.direction == "higher" else -1

        def loss(e: dict) -> float:  # how much worse than the baseline on this very example
            other = base.get(e["position"], {}).get("score")
            return sign * (other - e["score"]) if other is not None else 0.0

        failing = sorted(failing, key=loss, reverse=True)
    out = []
    for e in failing[:limit]:
        row = {k: e[k] for k in ("position", "prompt", "prediction", "reference", "score", "tokens", "seconds")}
        if baseline is not None:
            other = {b["position"]: b for b in baseline.examples}.get(e["position"], {})
            row["baseline_score"], row["baseline_prediction"] = other.get("score"), other.get("prediction")
        out.append(row)
    return out


def report(ws: Workspace, run_id: int, *, gate_id: int | None = None, worst: int = WORST_EXAMPLES) -> dict[str, Any]:
    """A run's report: its KPIs, the gate that judged it (newest, or ``gate_id``), the baseline, worst examples, history."""
    from weightsmith.evals.gate import gate_dict

    run = get_run(ws, run_id)
    with ws.session() as s:
        run = s.get(EvalRun, run.id)
        if gate_id is not None:
            gate = s.get(Gate, gate_id)
            if gate is None or gate.project_id != ws.project_id:
                raise NotFound(f"no gate {gate_id} in this project.")
            if run.id not in (gate.candidate_run_id, gate.baseline_run_id):
                raise UserError(f"gate {gate_id} did not use run {run_id}; its runs are {gate.candidate_run_id} and {gate.baseline_run_id}.")
        else:
            gate = s.scalar(select(Gate).where(Gate.candidate_run_id == run.id).order_by(Gate.id.desc()).limit(1))
        outcomes = load_outcomes(s, run)
        doc = {"run": run_dict(s, run, outcomes), "gate": None, "baseline": None}
        baseline_outcomes: dict[str, KpiOutcome] = {}
        if gate is not None:
            doc["gate"] = gate_dict(s, gate)
            other_id = gate.baseline_run_id if gate.candidate_run_id == run.id else gate.candidate_run_id
            if other_id is not None:
                other = s.get(EvalRun, other_id)
                other_outcomes = load_outcomes(s, other)
                doc["baseline"] = run_dict(s, other, other_outcomes)
                baseline_outcomes = {o.kpi.name: o for o in other_outcomes}
        doc["worst"] = {o.kpi.name: _worst(o, baseline_outcomes.get(o.kpi.name), worst) for o in outcomes}
        doc["scores"] = {o.kpi.name: [e["score"] for e in o.examples if e["score"] is not None] for o in outcomes}
        version = s.get(ModelVersion, run.model_version_id) if run.model_version_id else None
        model_name, suite_name = (version.model.name if version else None), run.suite_name
    doc["history"] = history(ws, model_name, suite=suite_name) if model_name else None
    return doc


# -- HTML ---------------------------------------------------------------------------------------
CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#1d2330;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #dde2ea;padding-bottom:.3rem}
h3{font-size:1rem;margin:1.4rem 0 .4rem}.muted{color:#667085}
table{border-collapse:collapse;width:100%;margin:.5rem 0}th,td{border-bottom:1px solid #e6e9ef;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f7f9;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.pass{color:#137333;font-weight:600}.fail{color:#b3261e;font-weight:600}
.verdict{padding:.8rem 1rem;border-radius:6px;margin:1rem 0;font-size:1.05rem}
.verdict.pass{background:#e6f4ea}.verdict.fail{background:#fce8e6}
.plots{display:flex;flex-wrap:wrap;gap:1rem}.plots figure{margin:0}.plots figcaption{font-size:.8rem;color:#667085}
pre{white-space:pre-wrap;word-break:break-word;margin:0;font:12px/1.4 ui-monospace,Menlo,Consolas,monospace;max-height:12rem;overflow:auto}
"""
CANDIDATE_COLOR, BASELINE_COLOR, TARGET_COLOR = "#1a73e8", "#9aa0a6", "#d93025"


def _f(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def _ci(kpi: dict | None) -> str:
    if not kpi:
        return "–"
    low, high = kpi["ci"]
    return f"{_f(kpi['value'])} <span class='muted'>[{_f(low)}, {_f(high)}]</span>"


def _finite(values: list[Any]) -> list[float]:
    return [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


def _scale(values: list[float], pad: float = 0.08) -> tuple[float, float]:
    low, high = min(values), max(values)
    if high == low:
        low, high = low - (abs(low) * 0.1 or 0.5), high + (abs(high) * 0.1 or 0.5)
    span = high - low
    # Scores that cannot go below zero (rates, perplexities, seconds) get no negative axis.
    return (low - pad * span if low < 0 or low - pad * span >= 0 else 0.0), high + pad * span


def interval_svg(items: list[tuple[str, dict | None, str]], target: float | None, width: int = 380) -> str:
    """One row per model: its value as a dot and its 95% interval as a bar; the target as a red line."""
    rows = [(label, kpi, color) for label, kpi, color in items if kpi and kpi.get("value") is not None]
    values = _finite([v for _, kpi, _ in rows for v in (kpi["value"], *kpi["ci"])] + [target])
    if not values:
        return ""
    low, high = _scale(values)
    left, right, row_h = 90, 20, 28
    height = row_h * len(rows) + 30

    def x(v: float) -> float:
        return left + (v - low) / (high - low) * (width - left - right)

    parts = [f"<svg width='{width}' height='{height}' role='img'>"]
    for i, (label, kpi, color) in enumerate(rows):
        y = 18 + i * row_h
        parts.append(f"<text x='4' y='{y + 4}' font-size='11'>{_e(label)}</text>")
        ci = _finite(kpi["ci"])
        if len(ci) == 2:
            parts.append(f"<line x1='{x(ci[0]):.1f}' x2='{x(ci[1]):.1f}' y1='{y}' y2='{y}' stroke='{color}' stroke-width='3'/>")
        parts.append(f"<circle cx='{x(kpi['value']):.1f}' cy='{y}' r='5' fill='{color}'/>")
    if target is not None:
        parts.append(f"<line x1='{x(target):.1f}' x2='{x(target):.1f}' y1='4' y2='{height - 22}' stroke='{TARGET_COLOR}' stroke-dasharray='4 3'/>")
    parts.append(f"<text x='{left}' y='{height - 6}' font-size='10' fill='#667085'>{_f(low, 3)}</text>")
    parts.append(f"<text x='{width - right}' y='{height - 6}' font-size='10' fill='#667085' text-anchor='end'>{_f(high, 3)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def history_svg(points: list[tuple[str, dict]], target: float | None, highlight: set[str], width: int = 380) -> str:
    """The KPI across versions: a line through the values, the intervals as whiskers."""
    points = [(label, kpi) for label, kpi in points if kpi.get("value") is not None]
    if len(points) < 2:
        return ""
    values = _finite([v for _, kpi in points for v in (kpi["value"], *kpi["ci"])] + [target])
    low, high = _scale(values)
    left, right, top, bottom, height = 40, 20, 10, 34, 170

    def x(i: int) -> float:
        return left + i * (width - left - right) / (len(points) - 1)

    def y(v: float) -> float:
        return top + (high - v) / (high - low) * (height - top - bottom)

    parts = [f"<svg width='{width}' height='{height}' role='img'>"]
    parts.append(f"<polyline fill='none' stroke='{CANDIDATE_COLOR}' stroke-width='1.5' points='"
                 + " ".join(f"{x(i):.1f},{y(kpi['value']):.1f}" for i, (_, kpi) in enumerate(points)) + "'/>")
    for i, (label, kpi) in enumerate(points):
        ci = _finite(kpi["ci"])
        if len(ci) == 2:
            parts.append(f"<line x1='{x(i):.1f}' x2='{x(i):.1f}' y1='{y(ci[0]):.1f}' y2='{y(ci[1]):.1f}' stroke='{BASELINE_COLOR}'/>")
        radius = 5 if label in highlight else 3
        parts.append(f"<circle cx='{x(i):.1f}' cy='{y(kpi['value']):.1f}' r='{radius}' fill='{CANDIDATE_COLOR}'><title>{_e(label)}: {_f(kpi['value'])}</title></circle>")
        parts.append(f"<text x='{x(i):.1f}' y='{height - 18}' font-size='10' text-anchor='middle'>{_e(label.rpartition('@')[2])}</text>")
    if target is not None:
        parts.append(f"<line x1='{left}' x2='{width - right}' y1='{y(target):.1f}' y2='{y(target):.1f}' stroke='{TARGET_COLOR}' stroke-dasharray='4 3'/>")
    parts.append(f"<text x='2' y='{top + 8}' font-size='10' fill='#667085'>{_f(high, 3)}</text>")
    parts.append(f"<text x='2' y='{height - bottom}' font-size='10' fill='#667085'>{_f(low, 3)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def histogram_svg(scores: list[float], bins: int = 12, width: int = 300) -> str:
    """How the per-example scores are spread."""
    values = _finite(scores)
    if not values:
        return ""
    low, high = min(values), max(values)
    if high == low:
        low, high = low - 0.5, high + 0.5
    counts = [0] * bins
    for v in values:
        counts[min(int((v - low) / (high - low) * bins), bins - 1)] += 1
    height, bottom = 120, 18
    bar_w = width / bins
    tallest = max(counts)
    parts = [f"<svg width='{width}' height='{height}' role='img'>"]
    for i, count in enumerate(counts):
        h = (height - bottom - 4) * count / tallest
        parts.append(f"<rect x='{i * bar_w + 1:.1f}' y='{height - bottom - h:.1f}' width='{bar_w - 2:.1f}' height='{h:.1f}' fill='{CANDIDATE_COLOR}'><title>{count}</title></rect>")
    parts.append(f"<text x='0' y='{height - 4}' font-size='10' fill='#667085'>{_f(low, 3)}</text>")
    parts.append(f"<text x='{width}' y='{height - 4}' font-size='10' fill='#667085' text-anchor='end'>{_f(high, 3)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, list):
        return "\n".join(f"{m.get('role')}: {m.get('content')}" for m in prompt if isinstance(m, dict))
    return "" if prompt is None else str(prompt)


def render_html(doc: dict[str, Any]) -> str:
    """The report document (:func:`report`) as one self-contained HTML page."""
    run, gate, base = doc["run"], doc.get("gate"), doc.get("baseline")
    rules_by_kpi: dict[str, list[dict]] = {}
    for rule in (gate or {}).get("rules", []):
        rules_by_kpi.setdefault(rule["kpi"], []).append(rule)
    out = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{_e(run['suite'])} on {_e(run['model'])}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(run['suite'])} on {_e(run['model'])}</h1>",
        f"<p class='muted'>eval run {run['run']} · {_e(run['created_at'])} · {_e(run['device'])} · {run['seconds']:.1f} s"
        f"{' · ' + _e(run['source']) if run.get('source') else ''}</p>",
    ]
    if gate:
        verdict = "PASSED" if gate["passed"] else "REFUSED"
        failed = sum(not r["passed"] for r in gate["rules"])
        against = gate["baseline"] or "floors only"
        out.append(
            f"<div class='verdict {'pass' if gate['passed'] else 'fail'}'>Gate {gate['gate']}: <b>{verdict}</b> — "
            f"{_e(gate['candidate'])} against {_e(against)}"
            f"{' (' + _e(gate['baseline_ref']) + ')' if gate.get('baseline_ref') and gate['baseline_ref'] != against else ''}; "
            f"{len(gate['rules']) - failed} of {len(gate['rules'])} rules passed.{' ' + _e(gate['note']) if gate.get('note') else ''}</div>"
        )

    out.append("<h2>KPIs</h2><table><tr><th>KPI</th><th>metric</th><th class='num'>n</th><th>value [95% CI]</th>"
               "<th>target</th>" + ("<th>baseline [95% CI]</th><th class='num'>Δ</th>" if base else "") + "<th>verdict</th></tr>")
    for name, kpi in run["kpis"].items():
        other = base["kpis"].get(name) if base else None
        delta = (kpi["value"] - other["value"]) if other and kpi["value"] is not None and other["value"] is not None else None
        rules = rules_by_kpi.get(name)
        if rules:
            verdict = "<span class='pass'>pass</span>" if all(r["passed"] for r in rules) else "<span class='fail'>fail</span>"
        elif kpi["met_target"] is not None:
            verdict = "<span class='pass'>met</span>" if kpi["met_target"] else "<span class='fail'>missed</span>"
        else:
            verdict = "<span class='muted'>–</span>"
        arrow = "↑" if kpi["direction"] == "higher" else "↓"
        tags = " <span class='muted'>(retention)</span>" if kpi["retention"] else ""
        out.append(
            f"<tr><td>{_e(name)}{tags}</td><td>{_e(kpi['metric'])} <span class='muted'>{_e(kpi['aggregate'])} {arrow}</span></td>"
            f"<td class='num'>{kpi['n']}</td><td>{_ci(kpi)}</td><td>{_f(kpi['target'])}</td>"
            + (f"<td>{_ci(other)}</td><td class='num'>{_f(delta, 3)}</td>" if base else "")
            + f"<td>{verdict}</td></tr>"
        )
        other_slices = (other or {}).get("slices") or {}
        for label, piece in (kpi.get("slices") or {}).items():  # a sliced KPI: a row per value of its column
            out.append(
                f"<tr class='slice'><td>&nbsp;&nbsp;{_e(kpi['slice_by'])} = {_e(label)}</td><td></td>"
                f"<td class='num'>{piece['n']}</td><td>{_ci(piece)}</td><td></td>"
                + (f"<td>{_ci(other_slices.get(label))}</td><td></td>" if base else "") + "<td></td></tr>"
            )
    out.append("</table>")

    if gate:
        out.append("<h2>Gate rules</h2><table><tr><th>KPI</th><th>rule</th><th class='num'>value</th><th class='num'>baseline</th>"
                   "<th class='num'>threshold</th><th class='num'>p</th><th>result</th><th>detail</th></tr>")
        for r in gate["rules"]:
            mark = "<span class='pass'>✓</span>" if r["passed"] else "<span class='fail'>✗</span>"
            out.append(
                f"<tr><td>{_e(r['kpi'])}</td><td>{_e(r['rule'])}</td><td class='num'>{_f(r['value'])}</td>"
                f"<td class='num'>{_f(r['baseline'])}</td><td class='num'>{_f(r['threshold'])}</td>"
                f"<td class='num'>{_f(r['p_value'], 3)}</td><td>{mark}</td><td>{_e(r['detail'])}</td></tr>"
            )
        out.append("</table>")

    history_rows = (doc.get("history") or {}).get("versions", [])
    highlight = {run["model"], *([base["model"]] if base else [])}
    for name, kpi in run["kpis"].items():
        out.append(f"<h2>{_e(name)}</h2><div class='plots'>")
        items = [(run["model"], kpi, CANDIDATE_COLOR)]
        if base:
            items.append((base["model"], base["kpis"].get(name), BASELINE_COLOR))
        out.append(f"<figure>{interval_svg(items, kpi['target'])}<figcaption>value and 95% interval"
                   f"{'; dashed: target' if kpi['target'] is not None else ''}</figcaption></figure>")
        trend = history_svg([(h["version"], h["kpis"][name]) for h in history_rows if name in h["kpis"]], kpi["target"], highlight)
        if trend:
            out.append(f"<figure>{trend}<figcaption>across versions (suite {_e(run['suite'])})</figcaption></figure>")
        spread = histogram_svg(doc.get("scores", {}).get(name, []))
        if spread:
            out.append(f"<figure>{spread}<figcaption>per-example scores</figcaption></figure>")
        out.append("</div>")
        worst = doc.get("worst", {}).get(name) or []
        if not worst:
            out.append("<p class='muted'>No failing examples.</p>")
            continue
        out.append(f"<h3>Worst failing examples</h3><table><tr><th class='num'>#</th><th>prompt</th><th>prediction</th>"
                   f"<th>reference</th><th class='num'>score</th>{'<th>baseline</th>' if base else ''}</tr>")
        for e in worst:
            reference = json.dumps(e["reference"], ensure_ascii=False) if e["reference"] else ""
            baseline_cell = (f"<td><pre>{_e(e.get('baseline_prediction'))}</pre><span class='muted'>score "
                             f"{_f(e.get('baseline_score'))}</span></td>") if base else ""
            out.append(
                f"<tr><td class='num'>{e['position'] + 1}</td><td><pre>{_e(_prompt_text(e['prompt']))}</pre></td>"
                f"<td><pre>{_e(e['prediction'])}</pre></td><td><pre>{_e(reference)}</pre></td>"
                f"<td class='num'>{_f(e['score'])}</td>{baseline_cell}</tr>"
            )
        out.append("</table>")
    out.append("<p class='muted'>weightsmith eval report</p></body></html>")
    return "\n".join(out)
