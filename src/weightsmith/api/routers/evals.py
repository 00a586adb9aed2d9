"""``/v1/evals`` and ``/v1/gates``: run a suite, read a run and its report, a model's history; gate and verdicts."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from weightsmith.api.app import Ctx, IdempotencyKey
from weightsmith.service import evals
from weightsmith.service.jobs import JobInfo
from weightsmith.service.evals import (
    EvalHistory,
    EvalReport,
    EvalRunInfo,
    EvalRunRef,
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
