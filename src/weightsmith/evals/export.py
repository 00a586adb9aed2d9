"""Every prediction of an eval run, as rows a person opens in a spreadsheet or pandas.

A run stores every example of every KPI (``eval_examples``: the prompt as the model saw it, its
output, the row's other columns and the score), not just the worst few a report shows. This
reads them back a page at a time — one row per KPI and example, in the suite's KPI order and
each KPI's dataset order — and writes them as JSON Lines or CSV.
"""

from __future__ import annotations

import csv
import io
import json
from typing import IO, Any

from sqlalchemy import func, select

from weightsmith.errors import UserError, closest
from weightsmith.evals.rows import example_slice
from weightsmith.evals.run import get_run
from weightsmith.evals.suite import Suite
from weightsmith.workspace import Workspace
from weightsmith.workspace.models import EvalExample

EXPORT_FORMATS = ("jsonl", "csv")
# The CSV's fixed columns; each reference column and slice column follows as reference.NAME / slice.NAME.
CSV_COLUMNS = ["run", "model", "kpi", "metric", "position", "prompt", "output", "score", "tokens", "seconds", "finish_reason"]


def export_rows(ws: Workspace, run_id: int, *, kpi: str | None = None, offset: int = 0, limit: int = 1000) -> dict[str, Any]:
    """A page of a run's examples.

    Args:
        run_id: the eval run.
        kpi: only this KPI's examples.
        offset, limit: rows to skip, most rows to return.

    Returns:
        ``{"run", "model", "suite", "total", "rows": [{"kpi", "metric", "position", "prompt", "reference",
        "output", "score", "slice", "tokens", "seconds", "finish_reason"}], "next_offset", "done"}``;
        ``slice`` is ``{column: value}`` for a KPI with ``slice_by``, else None.

    Raises:
        NotFound: no such run in this project.
        UserError: the run has no KPI ``kpi``.
    """
    run = get_run(ws, run_id)
    suite = Suite.model_validate(run.suite)
    if kpi is not None and kpi not in suite.kpis:
        raise UserError(f"run {run_id} has no KPI '{kpi}'{closest(kpi, list(suite.kpis))}; it has: {', '.join(suite.kpis)}.")
    where = [EvalExample.run_id == run.id, *([EvalExample.kpi == kpi] if kpi is not None else [])]
    with ws.session() as s:
        total = s.scalar(select(func.count()).select_from(EvalExample).where(*where)) or 0
        # Examples are written KPI by KPI in suite order, each in dataset order: the id keeps that order.
        examples = s.scalars(select(EvalExample).where(*where).order_by(EvalExample.id).offset(offset).limit(limit)).all()
        rows = []
        for e in examples:
            spec = suite.kpis.get(e.kpi)
            label = example_slice(spec, {"reference": e.reference}) if spec is not None else None
            rows.append({
                "kpi": e.kpi, "metric": spec.metric if spec else "", "position": e.position, "prompt": e.prompt,
                "reference": e.reference or {}, "output": e.prediction, "score": e.score,
                "slice": {spec.slice_by: (e.reference or {}).get(spec.slice_by, label)} if label is not None else None,
                "tokens": e.tokens, "seconds": e.seconds, "finish_reason": e.finish_reason,
            })
    next_offset = offset + len(rows)
    return {"run": run.id, "model": run.model_ref, "suite": run.suite_name, "total": total, "rows": rows,
            "next_offset": next_offset, "done": next_offset >= total}


def _cell(value: Any) -> Any:
    """A CSV cell: text and numbers as they are, anything nested as compact JSON, None as empty."""
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return value


def write_jsonl(rows: list[dict], out: IO[str], *, run: int, model: str) -> None:
    """One JSON object a line: the run, the model and the row's fields."""
    for row in rows:
        out.write(json.dumps({"run": run, "model": model, **row}, ensure_ascii=False) + "\n")


def write_csv(rows: list[dict], out: IO[str], *, run: int, model: str) -> None:
    """A header and one line per row; each reference and slice column in its own column (nested values as JSON)."""
    reference = list(dict.fromkeys(k for row in rows for k in (row.get("reference") or {})))
    slices = list(dict.fromkeys(k for row in rows for k in (row.get("slice") or {})))
    columns = CSV_COLUMNS + [f"reference.{k}" for k in reference] + [f"slice.{k}" for k in slices]
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        base = {"run": run, "model": model, **row}
        writer.writerow([_cell(base.get(c)) for c in CSV_COLUMNS]
                        + [_cell((row.get("reference") or {}).get(k)) for k in reference]
                        + [_cell((row.get("slice") or {}).get(k)) for k in slices])


def render(rows: list[dict], fmt: str, *, run: int, model: str) -> str:
    """The rows as a JSON Lines or CSV document."""
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"--format: '{fmt}' is not an export format; use {' or '.join(EXPORT_FORMATS)}.")
    out = io.StringIO()
    (write_jsonl if fmt == "jsonl" else write_csv)(rows, out, run=run, model=model)
    return out.getvalue()
