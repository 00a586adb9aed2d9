"""``/v1/evals`` and ``/v1/gates``: run a suite, read a run, its report and its examples, compare two runs, a model's
history; gate and verdicts."""

from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from weightsmith.api.app import Ctx, IdempotencyKey
from weightsmith.service import evals
from weightsmith.service.jobs import JobInfo
from weightsmith.service.evals import (
    MAX_EXPORT_ROWS,
    CompareRuns,
    EvalComparison,
    EvalHistory,
    EvalReport,
    EvalRunInfo,
    EvalRunRef,
    ExportedRows,
    ExportRequest,
    GateRef,
    GateVerdict,
    HistoryRequest,
    ReportRequest,
    RunEval,
    RunGate,
)

router = APIRouter(tags=["evals"])


@router.post("/evals", status_code=202, response_model=JobInfo)
def start_eval(body: RunEval, ctx: Ctx, key: IdempotencyKey = None) -> JobInfo:
    """Queue a KPI suite run (the suite inline, its KPIs on workspace datasets) on a model version: 202 with the job.

    Poll ``GET /v1/jobs/{id}``; when it has succeeded its last run's ``result.run`` is the eval run to read.
    """
    return evals.start_eval(ctx, body, idempotency_key=key)


@router.get("/evals/compare", response_model=EvalComparison)
def compare_runs(ctx: Ctx, a: int = Query(ge=1, le=2**63 - 1), b: int = Query(ge=1, le=2**63 - 1),
                 kpi: list[str] | None = Query(None)) -> EvalComparison:
    """Two stored runs of one suite, KPI by KPI: the paired difference B − A, its 95% interval, McNemar's exact p."""
    return evals.compare_runs(ctx, CompareRuns(a=a, b=b, kpis=kpi))


@router.get("/evals/{run}", response_model=EvalRunInfo)
def show_eval(run: int, ctx: Ctx) -> EvalRunInfo:
    """A stored eval run with its KPIs and intervals."""
    return evals.show_eval(ctx, EvalRunRef(run=run))


@router.get("/evals/{run}/report", response_model=EvalReport)
def eval_report(run: int, ctx: Ctx, gate: int | None = None) -> EvalReport:
    """A run's report as JSON (KPIs, gate, baseline, worst examples, history)."""
    return evals.eval_report(ctx, ReportRequest(run=run, gate=gate))


@router.get("/evals/{run}/report.html", response_class=HTMLResponse)
def eval_report_html(run: int, ctx: Ctx, gate: int | None = None) -> HTMLResponse:
    """A run's report as a self-contained HTML page."""
    return HTMLResponse(evals.eval_report(ctx, ReportRequest(run=run, gate=gate, html=True)).html)


@router.get("/evals/{run}/examples", response_model=ExportedRows)
def export_eval(run: int, ctx: Ctx, kpi: str | None = None, offset: int = Query(0, ge=0, le=2**63 - 1),
                limit: int = Query(1000, ge=1, le=MAX_EXPORT_ROWS)) -> ExportedRows:
    """Every example of a run (prompt, reference, output, score, slice), a page at a time: read on with next_offset."""
    return evals.export_eval(ctx, ExportRequest(run=run, kpi=kpi, offset=offset, limit=limit))


@router.get("/models/{name}/history", response_model=EvalHistory, tags=["models"])
def eval_history(name: str, ctx: Ctx, suite: str | None = None) -> EvalHistory:
    """A model's KPIs across its versions."""
    return evals.eval_history(ctx, HistoryRequest(model=name, suite=suite))


@router.post("/gates", status_code=202, response_model=JobInfo, tags=["gates"])
def start_gate(body: RunGate, ctx: Ctx, key: IdempotencyKey = None) -> JobInfo:
    """Queue a gate of a candidate against its baseline on an inline suite: 202 with the job.

    The job succeeds when the gate passes and fails when it refuses; its last run's ``result.gate`` is the verdict's id.
    """
    return evals.start_gate(ctx, body, idempotency_key=key)


@router.get("/gates/{gate}", response_model=GateVerdict, tags=["gates"])
def show_gate(gate: int, ctx: Ctx) -> GateVerdict:
    """A stored gate verdict."""
    return evals.show_gate(ctx, GateRef(gate=gate))
