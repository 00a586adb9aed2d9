"""``/v1/pipelines``: submit (202 with the job ids), list, show, cancel."""

from __future__ import annotations

from fastapi import APIRouter, Query

from weightsmith.api.app import Ctx, IdempotencyKey
from weightsmith.service import pipelines
from weightsmith.service.pipelines import (
    ListPipelines,
    PipelineInfo,
    PipelineList,
    PipelineRef,
    PipelineSubmitted,
    SubmitPipeline,
)

router = APIRouter(tags=["pipelines"])


@router.post("/pipelines", status_code=202, response_model=PipelineSubmitted)
def submit(body: SubmitPipeline, ctx: Ctx, key: IdempotencyKey = None) -> PipelineSubmitted:
    """Validate a pipeline (``yaml`` text or ``spec`` mapping) and queue one job per stage; 202 with the job ids.

    Training runs in a worker: poll ``GET /v1/jobs/{id}`` or ``GET /v1/pipelines/{id}``. With an
    ``Idempotency-Key`` header, the same pipeline again returns the first submission.
    """
    if key is not None:
        body = body.model_copy(update={"idempotency_key": key})
    return pipelines.submit(ctx, body)


@router.get("/pipelines", response_model=PipelineList)
def list_pipelines(ctx: Ctx, limit: int = Query(100, ge=1, le=10_000)) -> PipelineList:
    """The project's pipelines, newest first."""
    return pipelines.list_pipelines(ctx, ListPipelines(limit=limit))


@router.get("/pipelines/{id}", response_model=PipelineInfo)
def show_pipeline(id: int, ctx: Ctx) -> PipelineInfo:
    """A pipeline's jobs and overall state."""
    return pipelines.show_pipeline(ctx, PipelineRef(id=id))


@router.post("/pipelines/{id}/cancel", response_model=PipelineInfo)
def cancel_pipeline(id: int, ctx: Ctx, key: IdempotencyKey = None) -> PipelineInfo:
    """Cancel every job of the pipeline that has not ended."""
    return pipelines.cancel_pipeline(ctx, {"id": id}, idempotency_key=key)
