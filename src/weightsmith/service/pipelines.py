"""Pipeline verbs: submit (a YAML file, YAML text or a mapping), list, show, cancel.

Submitting validates everything first (every key, every dataset line, every reference) and then
queues one job per stage; it returns at once with the job ids. Training happens in a worker
(``weightsmith worker``, or the CLI's inline worker): poll ``jobs.show`` / ``pipelines.show``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, model_validator
from sqlalchemy import select

from weightsmith import config
from weightsmith.errors import NotFound, UserError
from weightsmith.jobs import queue
from weightsmith.jobs.pipeline import submit_pipeline as queue_pipeline
from weightsmith.service.context import Context
from weightsmith.service.datasets import DatasetVersionInfo
from weightsmith.service.idempotency import run_once
from weightsmith.service.jobs import JobInfo
from weightsmith.service.verbs import verb
from weightsmith.workspace.models import Pipeline


class SubmitPipeline(BaseModel):
    """A pipeline to run: exactly one of ``path`` (local callers), ``yaml`` or ``spec``."""

    path: str | None = Field(None, description="a pipeline YAML file on this machine (not allowed for remote callers)")
    yaml: str | None = Field(None, description="the pipeline as YAML text")
    spec: dict[str, Any] | None = Field(None, description="the pipeline as a mapping (name, model, datasets, defaults, stages)")
    overrides: list[str] = Field([], description="key=value overrides, e.g. ['sft.max_steps=50']")
    idempotency_key: str | None = Field(
        None, description="the same key with the same pipeline returns the first submission's pipeline and jobs")

    @model_validator(mode="after")
    def _one_source(self) -> SubmitPipeline:
        if sum(x is not None for x in (self.path, self.yaml, self.spec)) != 1:
            raise ValueError("give exactly one of 'path', 'yaml' or 'spec'")
        return self


class PipelineSubmitted(BaseModel):
    pipeline: int = Field(description="the pipeline's id")
    name: str
    model: str = Field(description="the model name its stages register versions under")
    jobs: list[JobInfo] = Field(description="one job per stage, in dependency order")
    datasets: list[DatasetVersionInfo] = Field([], description="dataset versions the pipeline added from its files")
    replayed: bool = Field(False, description="true when an idempotency key returned an earlier submission")


class _ResolvedPipeline(BaseModel):
    """What an idempotency key fingerprints: the pipeline after overrides, not the way it was sent."""

    spec: dict[str, Any]


def load_spec(ctx: Context, req: SubmitPipeline) -> tuple[config.PipelineSpec, str | None]:
    """The validated pipeline and its source file (None for text or a mapping)."""
    if req.path is not None:
        path = ctx.local_path(req.path, "path")
        return config.load_pipeline(path, req.overrides), str(path.resolve())
    if req.yaml is not None:
        raw = config.parse_pipeline_text(req.yaml, "pipeline")
    else:
        raw = dict(req.spec)
    base = Path.cwd() if not ctx.actor.remote else ctx.workspace.dir / "remote"
    return config.pipeline_from_mapping(raw, req.overrides, base / "pipeline.yaml"), None


def refuse_server_paths(ctx: Context, spec: config.PipelineSpec) -> None:
    """A remote caller's pipeline may name uploaded datasets and registry models, never server files."""
    if not ctx.actor.remote:
        return
    for name in spec.datasets:
        raise UserError(
            f"datasets.{name}: a remote client cannot name a file on the server; upload it with datasets.add "
            f"(POST /v1/datasets) and name it in the stage's data."
        )
    stage_names = {s.name for s in spec.stages}
    for stage in spec.stages:
        for field in ("model", "tokenizer"):
            ref = getattr(stage, field)
            if not ref or ref in stage_names or "@" in ref:
                continue
            if "/" in ref or ref.startswith((".", "~")):  # a folder: only under the operator's allow-list
                setattr(stage, field, str(ctx.local_path(ref, f"stages.{stage.name}.{field}")))
            else:  # a bare NAME is the registry's newest version, never a folder in the server's cwd
                setattr(stage, field, f"{ref}@latest")
        for key in ("reward", "verifier"):
            if key in stage.config:
                ctx.refuse_code(stage.config[key], f"stages.{stage.name}.{key}")
        if "suite" in stage.config:
            raise UserError(
                f"stages.{stage.name}.suite: a remote client cannot name a suite file on the server; "
                "run the gate with gates.start and an inline suite."
            )


@verb("pipelines.submit", scope="train", mutating=True, target=lambda req, res: f"pipeline {res.pipeline}")
def submit(ctx: Context, req: SubmitPipeline) -> PipelineSubmitted:
    """Validate a pipeline and queue one job per stage; returns at once with the pipeline id and job ids.

    Training is asynchronous: poll ``jobs.show`` (or ``pipelines.show``) until every job has ended;
    read progress with ``jobs.logs`` and ``jobs.metrics``. With ``idempotency_key``, sending the same
    pipeline again returns the first submission (``replayed: true``) and queues nothing; the same key
    with a different pipeline is refused.

    Raises:
        UserError: a bad key, dataset line or reference (nothing is queued); a reused key with a different pipeline.
        Conflict: the first request with this key is still being submitted.
    """
    spec, source = load_spec(ctx, req)
    refuse_server_paths(ctx, spec)
    if any(stage.kind == "promote" for stage in spec.stages):  # the alias moves later, in the worker
        ctx.actor.require("promote", "pipelines.submit with a promote stage")

    def work() -> PipelineSubmitted:
        return PipelineSubmitted(**ctx.public(queue_pipeline(ctx.workspace, spec, source=source, actor=ctx.actor.name)))

    result, replayed = run_once(ctx, "pipelines.submit", req.idempotency_key,
                                _ResolvedPipeline(spec=spec.model_dump(mode="json", exclude={"base_dir"})),
                                PipelineSubmitted, work)
    if replayed:  # the jobs as they stand now, not as they stood at the first submission
        current = {j["id"]: j for j in queue.list_jobs(ctx.workspace, pipeline_id=result.pipeline)}
        result = result.model_copy(update={
            "replayed": True, "jobs": [JobInfo(**current.get(j.id, j.model_dump())) for j in result.jobs]})
    return result


class PipelineRef(BaseModel):
    id: int = Field(ge=1, le=2**63 - 1, description="the pipeline's id")


class PipelineInfo(BaseModel):
    id: int
    name: str
    model: str
    source: str | None
    created_at: str
    state: str = Field(description="queued | running | succeeded | failed | cancelled: the pipeline as a whole")
    jobs: list[JobInfo]


def _pipeline_state(jobs: list[JobInfo]) -> str:
    states = {j.state for j in jobs}
    if not states:
        return "succeeded"
    if "running" in states or ("queued" in states and states & {"succeeded"}):
        return "running"
    if states == {"queued"}:
        return "queued"
    if states <= {"succeeded"}:
        return "succeeded"
    if "queued" in states:
        return "running"
    return "failed" if "failed" in states else "cancelled"


def _info(ctx: Context, row: Pipeline) -> PipelineInfo:
    jobs = [JobInfo(**j) for j in queue.list_jobs(ctx.workspace, pipeline_id=row.id)]
    return PipelineInfo(id=row.id, name=row.name, model=row.model_name, source=row.source if not ctx.actor.remote else None,
                        created_at=row.created_at.isoformat(timespec="seconds") + "Z", state=_pipeline_state(jobs), jobs=jobs)


def _get(ctx: Context, pipeline_id: int) -> Pipeline:
    with ctx.workspace.session() as s:
        row = s.get(Pipeline, pipeline_id)
        if row is None or row.project_id != ctx.workspace.project_id:
            raise NotFound(f"no pipeline {pipeline_id}; 'weightsmith pipelines list' shows them.")
        return row


class ListPipelines(BaseModel):
    limit: int = Field(100, ge=1, le=10_000, description="the newest N pipelines")


class PipelineList(BaseModel):
    pipelines: list[PipelineInfo]


@verb("pipelines.list", scope="read")
def list_pipelines(ctx: Context, req: ListPipelines) -> PipelineList:
    """The project's pipelines, newest first, each with its jobs and an overall state."""
    with ctx.workspace.session() as s:
        rows = s.scalars(select(Pipeline).where(Pipeline.project_id == ctx.workspace.project_id)
                         .order_by(Pipeline.id.desc()).limit(req.limit)).all()
    return PipelineList(pipelines=[_info(ctx, r) for r in rows])


@verb("pipelines.show", scope="read")
def show_pipeline(ctx: Context, req: PipelineRef) -> PipelineInfo:
    """One pipeline: its jobs and their states, and the pipeline's overall state."""
    return _info(ctx, _get(ctx, req.id))


@verb("pipelines.cancel", scope="train", mutating=True, target=lambda req, res: f"pipeline {req.id}")
def cancel_pipeline(ctx: Context, req: PipelineRef) -> PipelineInfo:
    """Cancel every job of a pipeline that has not ended: queued ones at once, running ones by asking their worker."""
    row = _get(ctx, req.id)
    for job in queue.list_jobs(ctx.workspace, pipeline_id=row.id):
        if job["state"] in ("queued", "running"):
            try:
                queue.cancel_job(ctx.workspace, job["id"])
            except UserError:  # it ended (or was cancelled with an upstream one) between the list and now
                continue
    return _info(ctx, row)
