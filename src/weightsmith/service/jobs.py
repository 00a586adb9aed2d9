"""Job verbs: list, show, cancel, retry, logs from an offset, metric history from an offset.

Training, evaluation and gates run as jobs in a worker; these verbs never block on them. An agent
submits a pipeline (:mod:`weightsmith.service.pipelines`), then polls ``jobs.show`` for the state and
reads ``jobs.logs`` and ``jobs.metrics`` with the offset each answer returns, so it only ever reads
what is new.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from weightsmith.jobs import queue
from weightsmith.service.context import Context
from weightsmith.service.verbs import verb

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
MAX_LOG_CHUNK = 1 << 20


class JobInfo(BaseModel):
    """A job: one stage of a pipeline (or an eval or gate), and where it stands."""

    model_config = ConfigDict(extra="allow")
    id: int
    pipeline: int | None
    stage: str
    kind: str
    state: JobState
    attempts: int
    depends_on: list[int]
    error: str | None
    worker: str | None
    created_at: str | None
    started_at: str | None
    finished_at: str | None


class RunInfo(BaseModel):
    """One attempt at a job: its resolved config, result, exit code and the latest value of each metric."""

    model_config = ConfigDict(extra="allow")
    id: int
    status: str
    exit_code: int | None
    config: dict[str, Any]
    result: dict[str, Any]
    metric_steps: int
    last_metrics: dict[str, float]
    started_at: str | None
    finished_at: str | None


class JobDetail(JobInfo):
    payload: dict[str, Any] = {}
    runs: list[RunInfo] = []


class JobRef(BaseModel):
    id: int = Field(ge=1, le=2**63 - 1, description="the job's id")


class ListJobs(BaseModel):
    state: JobState | None = Field(None, description="only jobs in this state")
    pipeline: int | None = Field(None, description="only this pipeline's jobs")


class JobList(BaseModel):
    jobs: list[JobInfo]


@verb("jobs.list", scope="read")
def list_jobs(ctx: Context, req: ListJobs) -> JobList:
    """The project's jobs, oldest first, optionally only one state or one pipeline's."""
    return JobList(jobs=[JobInfo(**j) for j in queue.list_jobs(ctx.workspace, state=req.state, pipeline_id=req.pipeline)])


@verb("jobs.show", scope="read")
def show_job(ctx: Context, req: JobRef) -> JobDetail:
    """One job with its runs (attempts): state, error sentence, result (the model version it registered), last metrics.

    Poll this until ``state`` is succeeded, failed or cancelled.
    """
    doc = queue.show_job(ctx.workspace, req.id)
    if ctx.actor.remote:  # where the server keeps things is not a remote caller's business
        doc["payload"] = {"config": (doc.get("payload") or {}).get("config", {})}
        doc["runs"] = [{k: v for k, v in run.items() if k not in ("log", "output", "pid")} for run in doc["runs"]]
        for run in doc["runs"]:
            run["config"] = {"config": (run.get("config") or {}).get("config", {})}
    return JobDetail(**doc)


@verb("jobs.cancel", scope="train", mutating=True, target=lambda req, res: f"job {req.id}")
def cancel_job(ctx: Context, req: JobRef) -> JobInfo:
    """Cancel a queued job at once, or ask the worker to stop a running one (its dependants are cancelled too)."""
    return JobInfo(**queue.cancel_job(ctx.workspace, req.id))


@verb("jobs.retry", scope="train", mutating=True, target=lambda req, res: f"job {req.id}")
def retry_job(ctx: Context, req: JobRef) -> JobInfo:
    """Re-queue a failed or cancelled job and the dependants it took down; training resumes from its last complete checkpoint."""
    return JobInfo(**queue.retry_job(ctx.workspace, req.id))


class ReadLogs(BaseModel):
    id: int = Field(ge=1, le=2**63 - 1, description="the job's id")
    offset: int = Field(0, ge=0, description="bytes already read; pass the previous answer's next_offset")
    limit: int = Field(MAX_LOG_CHUNK, ge=4, le=MAX_LOG_CHUNK, description="most bytes to return (4 or more: one UTF-8 character)")


class LogChunk(BaseModel):
    text: str = Field(description="log text from offset (the runs' logs one after another, each under '==> run N <==')")
    offset: int
    next_offset: int = Field(description="pass as offset to read on")
    done: bool = Field(description="the job has ended and everything was read")
    state: JobState


def _log_parts(ctx: Context, job_id: int) -> list[tuple[bytes | Path, int]]:
    """The job's log as one append-only stream: each run's header, then its log file, with their sizes."""
    parts: list[tuple[bytes | Path, int]] = []
    for number, path in enumerate(queue.job_log_paths(ctx.workspace, job_id), start=1):
        header = f"==> run {number} <==\n".encode()
        parts.append((header, len(header)))
        p = Path(path) if path else None
        if p is not None and p.is_file():
            parts.append((p, p.stat().st_size))
    return parts


def _read_range(parts: list[tuple[bytes | Path, int]], offset: int, limit: int) -> tuple[bytes, int]:
    """Bytes ``offset .. offset+limit`` of the stream (reading only those), and the stream's size."""
    out, position, end = [], 0, offset + limit
    for part, size in parts:
        lo, hi = max(offset, position), min(end, position + size)
        if lo < hi:
            if isinstance(part, bytes):
                out.append(part[lo - position:hi - position])
            else:
                with open(part, "rb") as fh:
                    fh.seek(lo - position)
                    out.append(fh.read(hi - lo))
        position += size
    return b"".join(out), position


@verb("jobs.logs", scope="read")
def read_logs(ctx: Context, req: ReadLogs) -> LogChunk:
    """The job's log from a byte offset: call again with ``next_offset`` to read only what is new."""
    import codecs

    state = queue.job_state(ctx.workspace, req.id)
    chunk, size = _read_range(_log_parts(ctx, req.id), req.offset, req.limit)
    # A character cut at the chunk's end waits for the next read; bytes that are not UTF-8 read as U+FFFD.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text = decoder.decode(chunk, final=False)
    held = len(decoder.getstate()[0])
    next_offset = req.offset + len(chunk) - held
    if held and next_offset + held >= size and state in queue.TERMINAL:  # a truncated last character, for good
        text += decoder.decode(b"", final=True)
        next_offset = size
    ended = state in queue.TERMINAL
    return LogChunk(text=text, offset=req.offset, next_offset=next_offset, done=ended and next_offset >= size, state=state)


class ReadMetrics(BaseModel):
    id: int = Field(ge=1, le=2**63 - 1, description="the job's id")
    offset: int = Field(0, ge=0, description="rows already read; pass the previous answer's next_offset")
    names: list[str] | None = Field(None, description="only these metrics, e.g. ['loss', 'reward']")


class MetricPoint(BaseModel):
    run: int
    step: int
    name: str
    value: float


class MetricHistory(BaseModel):
    points: list[MetricPoint]
    next_offset: int
    state: JobState


@verb("jobs.metrics", scope="read")
def read_metrics(ctx: Context, req: ReadMetrics) -> MetricHistory:
    """The job's metric history (loss, lr, grad_norm, tokens/s, rewards ...) per step, from a row offset.

    Rows only ever append while a job runs, so passing ``next_offset`` back reads only new points.
    """
    rows = queue.job_metrics(ctx.workspace, req.id)
    state = queue.job_state(ctx.workspace, req.id)
    new = rows[req.offset:]
    if req.names:
        new = [r for r in new if r["name"] in req.names]
    return MetricHistory(points=[MetricPoint(**r) for r in new], next_offset=max(req.offset, len(rows)), state=state)
