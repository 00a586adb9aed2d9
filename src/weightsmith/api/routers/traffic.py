"""``/v1/traffic``: the request log of served models (list, show), feedback, export to a dataset, the logging setting."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from weightsmith.api.app import Ctx, IdempotencyKey
from weightsmith.service import traffic
from weightsmith.service.traffic import (
    ExportTraffic,
    FeedbackInfo,
    ListTraffic,
    LoggingSetting,
    LoggingMode,
    ShowTraffic,
    TrafficDetail,
    TrafficExported,
    TrafficList,
)

router = APIRouter(tags=["traffic"])


@router.get("/traffic", response_model=TrafficList)
def list_traffic(ctx: Ctx, model: str | None = Query(None, max_length=200), version: str | None = Query(None, max_length=300),
                 since: datetime | None = None, until: datetime | None = None,
                 limit: int = Query(50, ge=1, le=10_000)) -> TrafficList:
    """The project's served requests, newest first (filter by model, version and a since/until window, UTC)."""
    return traffic.list_traffic(ctx, ListTraffic(model=model, version=version, since=since, until=until, limit=limit))


@router.get("/traffic/logging", response_model=LoggingSetting)
def show_logging(ctx: Ctx) -> LoggingSetting:
    """What the request log keeps of this project's traffic: full, redacted or off."""
    return traffic.show_logging(ctx, {})


class LoggingBody(BaseModel):
    mode: LoggingMode = Field(description="full | redacted | off")


@router.put("/traffic/logging", response_model=LoggingSetting)
def set_logging(body: LoggingBody, ctx: Ctx, key: IdempotencyKey = None) -> LoggingSetting:
    """Choose what the request log keeps (the admin scope)."""
    return traffic.set_logging(ctx, body.model_dump(), idempotency_key=key)


@router.post("/traffic/export", status_code=201, response_model=TrafficExported)
def export_traffic(body: ExportTraffic, ctx: Ctx, key: IdempotencyKey = None) -> TrafficExported:
    """Turn a window of one model's served requests into a chat or prompt dataset version, with provenance."""
    return traffic.export_traffic(ctx, body, idempotency_key=key)


@router.get("/traffic/{request_id}", response_model=TrafficDetail)
def show_traffic(request_id: str, ctx: Ctx) -> TrafficDetail:
    """One served request whole: messages or prompt, choices with token ids, timings and feedback."""
    return traffic.show_traffic(ctx, ShowTraffic(request_id=request_id))


class FeedbackBody(BaseModel):
    score: float = Field(ge=-1e9, le=1e9, allow_inf_nan=False, description="your scale, e.g. 1 good / 0 bad")
    comment: str | None = Field(None, max_length=10_000)


@router.post("/traffic/{request_id}/feedback", status_code=201, response_model=FeedbackInfo)
def add_feedback(request_id: str, body: FeedbackBody, ctx: Ctx, key: IdempotencyKey = None) -> FeedbackInfo:
    """Record a score (and comment) on one served response (the serve scope)."""
    return traffic.add_feedback(ctx, {"request_id": request_id, **body.model_dump()}, idempotency_key=key)
