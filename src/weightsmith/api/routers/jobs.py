"""``/v1/jobs``: list, show, cancel, retry, logs (from an offset, or streamed as server-sent events), metrics."""

from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from weightsmith.api.app import Ctx, IdempotencyKey
from weightsmith.service import jobs
from weightsmith.service.jobs import (
    MAX_LOG_CHUNK,
    JobDetail,
    JobInfo,
    JobList,
    JobRef,
    JobState,
    ListJobs,
    LogChunk,
    MetricHistory,
    ReadLogs,
    ReadMetrics,
)

router = APIRouter(tags=["jobs"])
POLL_S = 0.5


@router.get("/jobs", response_model=JobList)
def list_jobs(ctx: Ctx, state: JobState | None = None, pipeline: int | None = None) -> JobList:
    """The project's jobs, oldest first."""
    return jobs.list_jobs(ctx, ListJobs(state=state, pipeline=pipeline))


@router.get("/jobs/{id}", response_model=JobDetail)
def show_job(id: int, ctx: Ctx) -> JobDetail:
    """A job with its runs; poll until ``state`` is succeeded, failed or cancelled."""
    return jobs.show_job(ctx, JobRef(id=id))


@router.post("/jobs/{id}/cancel", response_model=JobInfo)
def cancel_job(id: int, ctx: Ctx, key: IdempotencyKey = None) -> JobInfo:
    """Cancel a queued job, or ask its worker to stop a running one."""
    return jobs.cancel_job(ctx, {"id": id}, idempotency_key=key)


@router.post("/jobs/{id}/retry", response_model=JobInfo)
def retry_job(id: int, ctx: Ctx, key: IdempotencyKey = None) -> JobInfo:
    """Re-queue a failed or cancelled job; training resumes from its last complete checkpoint."""
    return jobs.retry_job(ctx, {"id": id}, idempotency_key=key)


@router.get("/jobs/{id}/logs", response_model=LogChunk,
            responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}})
async def read_logs(id: int, request: Request, ctx: Ctx, offset: int = Query(0, ge=0),
                    limit: int = Query(MAX_LOG_CHUNK, ge=4, le=MAX_LOG_CHUNK), stream: bool = False):
    """The job's log from a byte offset (JSON), or with ``stream=true`` (or ``Accept: text/event-stream``)
    as server-sent events while the job runs: one ``log`` event per new chunk, then ``end``.
    """
    req = ReadLogs(id=id, offset=offset, limit=limit)
    first = await run_in_threadpool(jobs.read_logs, ctx, req)
    if not (stream or "text/event-stream" in request.headers.get("accept", "")):
        return first

    async def events():
        chunk = first
        while True:
            if chunk.text:
                yield f"event: log\nid: {chunk.next_offset}\ndata: {json.dumps({'text': chunk.text, 'next_offset': chunk.next_offset})}\n\n"
            if chunk.done:
                yield f"event: end\ndata: {json.dumps({'state': chunk.state, 'next_offset': chunk.next_offset})}\n\n"
                return
            if await request.is_disconnected():
                return
            if not chunk.text:
                await asyncio.sleep(POLL_S)
            chunk = await run_in_threadpool(jobs.read_logs, ctx, ReadLogs(id=id, offset=chunk.next_offset, limit=limit))

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.get("/jobs/{id}/metrics", response_model=MetricHistory)
def read_metrics(id: int, ctx: Ctx, offset: int = Query(0, ge=0), name: list[str] | None = Query(None)) -> MetricHistory:
    """The job's metric history (loss, lr, rewards ...) from a row offset; pass ``next_offset`` back to read only new points."""
    return jobs.read_metrics(ctx, ReadMetrics(id=id, offset=offset, names=name))
