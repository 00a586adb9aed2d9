"""Evaluation and gate verbs: run a KPI suite, read a run and its report, a model's history, gate a candidate.

A suite is named by a file path (local callers) or given inline as a mapping (any caller). ``evals.start``
and ``gates.start`` queue the work as a job that a worker runs (what the REST API and the MCP server
offer: no remote call blocks for minutes); ``evals.run`` and ``gates.run`` compute in the calling
process and return when done (the CLI waits inline).
A gate that refuses is not an error of the call: its verdict says ``passed: false`` and every rule;
the CLI turns that into exit 3.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from weightsmith.errors import Forbidden, UserError
from weightsmith.service.context import Context
from weightsmith.service.jobs import JobInfo
from weightsmith.service.verbs import verb


class SuiteSource(BaseModel):
    """Where a suite comes from: a YAML file on this machine (local callers), or the suite itself."""

    suite_path: str | None = Field(None, description="a suite YAML on this machine (not allowed for remote callers)")
    suite: dict[str, Any] | None = Field(None, description="the suite as a mapping (name, kpis, ...)")

    @model_validator(mode="after")
    def _one_suite(self) -> SuiteSource:
        if (self.suite_path is None) == (self.suite is None):
            raise ValueError("give exactly one of 'suite_path' or 'suite'")
        return self

    def resolved(self, ctx: Context) -> str | Path | dict:
        if self.suite is not None:
            _refuse_remote_code(ctx, self.suite)
            if ctx.actor.remote and _names_files(self.suite):
                raise UserError("suite: a remote client's KPIs read workspace datasets ('data: NAME@vN', uploaded with "
                                "datasets.add), not files ('path', 'retention_suite').")
            return self.suite
        return ctx.local_path(self.suite_path, "suite_path")


OPERATOR_OPTIONS = ("endpoint", "api_key_env", "base_url", "api_key")


def _refuse_remote_code(ctx: Context, suite: dict[str, Any]) -> None:
    """A remote caller's suite may not import code, nor point a judge at an endpoint or an environment variable."""
    if not ctx.actor.remote:
        return
    kpis = suite.get("kpis") or {}
    for name, kpi in (kpis.items() if isinstance(kpis, dict) else []):
        if not isinstance(kpi, dict):
            continue
        ctx.refuse_code(kpi.get("metric"), f"suite.kpis.{name}.metric")
        options = kpi.get("options") or {}
        chosen = [k for k in OPERATOR_OPTIONS if isinstance(options, dict) and k in options]
        if chosen:
            raise Forbidden(
                f"suite.kpis.{name}.options.{chosen[0]}: a remote client cannot choose where a judge is called or "
                "which server credential it sends; the operator configures the judge."
            )


def _names_files(suite: dict[str, Any]) -> bool:
    """Whether a suite reads files (a KPI's ``path``, a ``retention_suite``) rather than workspace datasets."""
    kpis = suite.get("kpis") or {}
    items = kpis.values() if isinstance(kpis, dict) else kpis
    return "retention_suite" in suite or any(isinstance(k, dict) and "path" in k for k in items)


def model_ref(ctx: Context, ref: str, key: str) -> str:
    """A model a caller named: a registry ref, or a local folder (checked against the allow-list for remote callers)."""
    if "@" in ref:
        return ref
    if "/" in ref or ref.startswith((".", "~")):
        return str(ctx.local_path(ref, key))
    # A bare NAME is the newest version; for a remote caller it must never fall through to a folder
    # of that name in the server's working directory.
    return f"{ref}@latest" if ctx.actor.remote else ref


class KpiValue(BaseModel):
    model_config = ConfigDict(extra="allow")
    value: float | None
    ci: list[float | None] = Field(description="95% interval [low, high]")
    n: int
    metric: str
    aggregate: str
    direction: str
    target: float | None
    met_target: bool | None
    retention: bool


class EvalRunInfo(BaseModel):
    """One stored run of a suite on a model: every KPI with its 95% interval."""

    model_config = ConfigDict(extra="allow")
    run: int
    model: str
    suite: str
    suite_hash: str
    device: str
    seconds: float
    created_at: str
    kpis: dict[str, KpiValue]
    html: str | None = Field(None, description="the report page written, when one was asked for")


class RunEval(SuiteSource):
    model: str = Field(description="the version to evaluate: NAME@vN, NAME@ALIAS, NAME (newest)")
    device: str | None = Field(None, description="auto | cpu | cuda (default: the suite's)")


@verb("evals.run", scope="train", mutating=True, local_only=True,
      target=lambda req, res: f"eval run {res.run}" if res else req.model)
def run_eval(ctx: Context, req: RunEval) -> EvalRunInfo:
    """Run a KPI suite on a model version and store every example's prediction and score; blocks until done.

    Emits ``eval_started`` once the suite, its data and the model have been checked (before any generation).
    """
    from weightsmith.evals.run import run_suite

    model = model_ref(ctx, req.model, "model")
    return EvalRunInfo(**run_suite(ctx.workspace, req.resolved(ctx), model, device=req.device,
                                   on_start=lambda: ctx.emit("eval_started", model=req.model)))


class EvalRunRef(BaseModel):
    run: int = Field(ge=1, le=2**63 - 1, description="the eval run's id")


@verb("evals.show", scope="read")
def show_eval(ctx: Context, req: EvalRunRef) -> EvalRunInfo:
    """One stored eval run: its KPIs with intervals, the model and suite."""
    from weightsmith.evals.run import get_run, run_dict

    run = get_run(ctx.workspace, req.run)
    with ctx.workspace.session() as s:
        return EvalRunInfo(**ctx.public(run_dict(s, s.merge(run))))


class EvalReport(BaseModel):
    """A run's report: its KPIs, the gate that judged it, the baseline's run, the worst examples and history."""

    model_config = ConfigDict(extra="allow")
    run: EvalRunInfo
    gate: dict[str, Any] | None
    baseline: dict[str, Any] | None
    worst: dict[str, list[dict[str, Any]]]
    history: dict[str, Any] | None
    html: str | None = Field(None, description="the self-contained HTML page, when asked for")


class ReportRequest(EvalRunRef):
    gate: int | None = Field(None, description="the gate to show (default: the newest that judged the run)")
    html: bool = Field(False, description="also render the self-contained HTML page into 'html'")


@verb("evals.report", scope="read")
def eval_report(ctx: Context, req: ReportRequest) -> EvalReport:
    """A run's report (and, with html, the self-contained page: KPI table, intervals, plots, worst examples)."""
    from weightsmith.evals.report import render_html, report

    doc = report(ctx.workspace, req.run, gate_id=req.gate)
    page = render_html(doc) if req.html else None
    doc.pop("scores", None)
    return EvalReport(**ctx.public(doc), html=page)


class HistoryRequest(BaseModel):
    model: str = Field(description="the model's name")
    suite: str | None = Field(None, description="only this suite's runs")


class EvalHistory(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    suites: list[str]
    versions: list[dict[str, Any]]


@verb("evals.history", scope="read")
def eval_history(ctx: Context, req: HistoryRequest) -> EvalHistory:
    """A model's KPIs across its versions (the newest run of each suite on each version)."""
    from weightsmith.evals.report import history

    return EvalHistory(**history(ctx.workspace, req.model, suite=req.suite))


class GateVerdict(BaseModel):
    """A gate's verdict: every rule (floor, max regression, paired test) with its numbers."""

    model_config = ConfigDict(extra="allow")
    gate: int
    passed: bool
    candidate: str
    baseline: str | None
    baseline_ref: str | None
    alias: str | None
    floors_only: bool
    note: str | None
    suite: str
    rules: list[dict[str, Any]]
    runs: dict[str, int | None]
    kpis: dict[str, Any]


class RunGate(SuiteSource):
    candidate: str = Field(description="the version to judge, NAME@vN")
    baseline: str | None = Field(None, description="NAME@ALIAS (usually NAME@champion) or NAME@vN; none: floors only")
    device: str | None = None
    rerun: bool = Field(False, description="evaluate again even if a run of this suite on the version is stored")


@verb("gates.run", scope="train", mutating=True, local_only=True,
      target=lambda req, res: f"gate {res.gate}" if res else req.candidate)
def run_gate(ctx: Context, req: RunGate) -> GateVerdict:
    """May a candidate replace its baseline? Evaluates both (reusing stored runs), applies every rule, stores the verdict.

    A refusal is a verdict (``passed: false``), not an error. Promote a passing candidate with ``models.promote``.
    """
    from weightsmith.evals.gate import run_gate as gate

    candidate = model_ref(ctx, req.candidate, "candidate")
    baseline = model_ref(ctx, req.baseline, "baseline") if req.baseline else None
    return GateVerdict(**gate(ctx.workspace, req.resolved(ctx), candidate, baseline, device=req.device,
                              reuse=not req.rerun))


class GateRef(BaseModel):
    gate: int = Field(ge=1, le=2**63 - 1, description="the gate's id")


@verb("gates.show", scope="read")
def show_gate(ctx: Context, req: GateRef) -> GateVerdict:
    """A stored gate verdict, rule by rule."""
    from weightsmith.evals.gate import show_gate as show

    return GateVerdict(**ctx.public(show(ctx.workspace, req.gate)))


# -- comparing two models, exporting a run ----------------------------------------------------------
class ComparedModel(BaseModel):
    model: str = Field(description="the version (NAME@vN) or folder evaluated")
    run: int = Field(description="its eval run: every example is stored (evals.export reads them)")
    reused: bool = Field(description="a stored run of the exact suite on this version stood in")


class KpiComparison(BaseModel):
    """One KPI of a comparison: both values, and the paired difference B − A on the same examples."""

    model_config = ConfigDict(extra="allow")
    metric: str
    aggregate: str
    direction: str = Field(description="higher | lower: which way is better")
    a: dict[str, Any] = Field(description="A's KPI: value, ci [low, high], n (and slices)")
    b: dict[str, Any] = Field(description="B's KPI: value, ci [low, high], n (and slices)")
    value_diff: float | None = Field(description="B's KPI value minus A's")
    n: int = Field(description="examples both models were scored on")
    diff: float | None = Field(description="mean per-example score difference B − A (pass/fail for pass_rate; "
                                           "NLL per token for perplexity)")
    ci: list[float | None] = Field(description="paired-bootstrap 95% interval of diff")
    p_value: float | None = Field(description="McNemar's exact test for pass/fail scores, else the paired bootstrap's")
    test: str | None = Field(description="mcnemar | paired_bootstrap")
    b_better_on: int = Field(description="examples where B did better (in the KPI's direction)")
    a_better_on: int = Field(description="examples where A did better")
    better: str | None = Field(description="'a' or 'b' when the test is significant at alpha, else null")


class EvalComparison(BaseModel):
    """Two models on one suite, KPI by KPI (and slice by slice): paired differences, intervals, p-values; no floors."""

    model_config = ConfigDict(extra="allow")
    suite: str
    suite_hash: str
    alpha: float
    a: ComparedModel
    b: ComparedModel
    kpis: dict[str, KpiComparison]


class CompareModels(SuiteSource):
    a: str = Field(description="model A, the reference: NAME@vN, NAME@ALIAS, NAME (newest)")
    b: str = Field(description="model B, compared with A (differences are B − A)")
    device: str | None = Field(None, description="auto | cpu | cuda (default: the suite's)")
    rerun: bool = Field(False, description="evaluate again even if a run of this suite on a version is stored")


@verb("evals.compare", scope="train", mutating=True, local_only=True,
      target=lambda req, res: f"eval runs {res.a.run} and {res.b.run}" if res else f"{req.a} vs {req.b}")
def compare_models(ctx: Context, req: CompareModels) -> EvalComparison:
    """Compare model B with model A on one KPI suite: per KPI (and per slice) the paired difference B − A on the
    same examples, its 95% interval and McNemar's exact p (pass/fail metrics) or a paired-bootstrap p; no floors.

    Stored runs of the exact suite on either version are reused; otherwise the model is evaluated here (blocks),
    and the run is stored. Remote callers: run ``evals.start`` for each model, then ``evals.compare_runs``.
    Emits ``eval_started`` once the suite, its data and both models have been checked.
    """
    from weightsmith.evals.compare import compare_models as compare

    a, b = model_ref(ctx, req.a, "a"), model_ref(ctx, req.b, "b")
    return EvalComparison(**compare(ctx.workspace, req.resolved(ctx), a, b, device=req.device, reuse=not req.rerun,
                                    on_start=lambda: ctx.emit("eval_started", a=req.a, b=req.b)))


class CompareRuns(BaseModel):
    a: int = Field(ge=1, le=2**63 - 1, description="run A's id, the reference")
    b: int = Field(ge=1, le=2**63 - 1, description="run B's id (differences are B − A)")
    kpis: list[str] | None = Field(None, description="only these KPIs (default: all)")


@verb("evals.compare_runs", scope="read")
def compare_runs(ctx: Context, req: CompareRuns) -> EvalComparison:
    """Compare two stored eval runs of the same suite on the same data: per KPI (and slice) the paired difference
    B − A, its 95% interval and McNemar's exact p or a paired-bootstrap p. Start the runs with ``evals.start``."""
    from weightsmith.evals.compare import compare_runs as compare

    return EvalComparison(**ctx.public(compare(ctx.workspace, req.a, req.b, kpis=req.kpis)))


MAX_EXPORT_ROWS = 5000


class ExportRequest(BaseModel):
    run: int = Field(ge=1, le=2**63 - 1, description="the eval run's id")
    kpi: str | None = Field(None, description="only this KPI's examples")
    offset: int = Field(0, ge=0, le=2**63 - 1, description="rows already read; pass the previous answer's next_offset")
    limit: int = Field(1000, ge=1, le=MAX_EXPORT_ROWS, description="most rows to return")


class ExportedExample(BaseModel):
    model_config = ConfigDict(extra="allow")
    kpi: str
    metric: str
    position: int = Field(description="the row's index in the KPI's dataset (pairs runs)")
    prompt: Any = Field(description="what the model was asked, as rendered for it (text or chat messages)")
    reference: dict[str, Any] = Field(description="the row's other columns (a chat row's last assistant turn: answer)")
    output: str | None = Field(description="the model's completion (none for perplexity)")
    score: float | None
    slice: dict[str, Any] | None = Field(description="{column: value} of a KPI with slice_by")
    tokens: int | None
    seconds: float | None
    finish_reason: str | None


class ExportedRows(BaseModel):
    """Every prediction of an eval run, a page at a time."""

    run: int
    model: str
    suite: str
    total: int = Field(description="rows in the run (of the KPI, when one was named)")
    rows: list[ExportedExample]
    next_offset: int = Field(description="pass as offset to read on")
    done: bool = Field(description="every row has been read")


@verb("evals.export", scope="read")
def export_eval(ctx: Context, req: ExportRequest) -> ExportedRows:
    """Every example of an eval run: prompt, reference, the model's output, its score, its slice; paged by offset.

    Read on with ``next_offset`` until ``done``. One row per KPI and example: several metrics scored on the same
    example are rows with the same position and output.
    """
    from weightsmith.evals.export import export_rows

    return ExportedRows(**export_rows(ctx.workspace, req.run, kpi=req.kpi, offset=req.offset, limit=req.limit))


# -- the same work as jobs ------------------------------------------------------------------------
def _start(ctx: Context, kind: str, model: str, suite: str | Path | dict, config: dict[str, Any]):
    from weightsmith.evals.suite import load_suite
    from weightsmith.jobs.queue import submit_job
    from weightsmith.workspace.registry import resolve_model

    resolved = resolve_model(ctx.workspace, model)
    if resolved.get("id") is None:
        raise UserError(f"model: an {kind} job evaluates a registered version (NAME@vN or NAME@ALIAS), not a folder.")
    loaded = load_suite(suite)  # every KPI key checked now, not when the worker gets to it
    payload = {"kind": kind, "config": {"suite": loaded.name, **config}, "seed": 0,
               "model_name": resolved["ref"].partition("@")[0], "model": resolved, "data": None, "tokenizer": None}
    if isinstance(suite, dict):
        payload["suite"] = suite
    else:
        payload["suite_path"] = str(Path(suite).resolve())
    job, _created = submit_job(ctx.workspace, kind=kind, stage=kind, payload=payload)
    return JobInfo(**job)


@verb("evals.start", scope="train", mutating=True, target=lambda req, res: f"job {res.id}" if res else req.model)
def start_eval(ctx: Context, req: RunEval) -> JobInfo:
    """Queue a KPI suite run on a model version as a job; returns the job at once.

    Poll ``jobs.show`` until it has ended; its last run's ``result`` holds the eval run's id (``run``)
    and the KPIs; ``evals.show`` and ``evals.report`` read the stored run.
    """
    return _start(ctx, "eval", model_ref(ctx, req.model, "model"), req.resolved(ctx), {"device": req.device})


@verb("gates.start", scope="train", mutating=True, target=lambda req, res: f"job {res.id}" if res else req.candidate)
def start_gate(ctx: Context, req: RunGate) -> JobInfo:
    """Queue a gate of a candidate against its baseline as a job; returns the job at once.

    Poll ``jobs.show`` until it has ended: a passing gate's job succeeds, a refusing one fails with the
    rules that failed; either way its last run's ``result`` holds the verdict (``gate``, ``passed``,
    ``rules``) and ``gates.show`` reads it. Then ``models.promote`` moves the alias if it passed.
    """
    baseline = model_ref(ctx, req.baseline, "baseline") if req.baseline else None
    return _start(ctx, "gate", model_ref(ctx, req.candidate, "candidate"), req.resolved(ctx),
                  {"baseline": baseline, "device": req.device})
