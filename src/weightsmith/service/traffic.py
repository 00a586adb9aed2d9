"""Served traffic verbs: the request log (list, show), feedback, export to a dataset, the logging setting.

Every request a served model answers lands in the request log (:mod:`weightsmith.serve.log`) with the
concrete version that answered, the messages, the output, token counts and timings. ``traffic.export``
turns a window of it — one model, optionally one version, a time range, optionally only responses users
scored well — into an ordinary dataset version (chat for SFT, prompt for RL and evals) with provenance,
so served traffic becomes training and eval data through the same validation as any upload.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from weightsmith.errors import NotFound, UserError, shorten
from weightsmith.service.context import Context
from weightsmith.service.datasets import DatasetVersionInfo
from weightsmith.service.verbs import verb

LoggingMode = Literal["full", "redacted", "off"]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="milliseconds") + "Z" if value else None


class TrafficWindow(BaseModel):
    model: str | None = Field(None, max_length=200, description="only this model's requests (its name, e.g. quill)")
    version: str | None = Field(None, max_length=300, description="only requests this version answered, NAME@vN")
    since: datetime | None = Field(None, description="requests from this time on (UTC; a date means its midnight)")
    until: datetime | None = Field(None, description="requests before this time (UTC)")

    def filters(self) -> dict[str, Any]:
        if self.since and self.until and self.until <= self.since:
            raise UserError(f"until ({_iso(self.until)}) must be after since ({_iso(self.since)}).")
        return {"model": self.model, "version": self.version, "since": _naive(self.since), "until": _naive(self.until)}


def _naive(value: datetime | None) -> datetime | None:
    """Our timestamps are naive UTC; an aware time is converted."""
    if value is None or value.tzinfo is None:
        return value
    from datetime import timezone

    return value.astimezone(timezone.utc).replace(tzinfo=None)


class ListTraffic(TrafficWindow):
    limit: int = Field(50, ge=1, le=10_000, description="the newest N requests")


class TrafficSummary(BaseModel):
    request_id: str
    at: str = Field(description="when the request arrived (UTC)")
    endpoint: str
    model: str = Field(description="as the request named it")
    version: str = Field(description="the concrete version that answered, NAME@vN")
    token: str | None = Field(description="the caller's token name")
    status: str = Field(description="ok; cancelled when the client went away; error when the engine failed")
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token: float | None = Field(description="seconds from arrival to the first token")
    total_seconds: float
    redacted: bool
    feedback: int = Field(0, description="how many feedback rows it has")
    mean_score: float | None = None
    preview: str | None = Field(None, description="the first choice's first 80 characters")


class TrafficList(BaseModel):
    requests: list[TrafficSummary]


def _summary(row, feedback: list) -> TrafficSummary:
    text = (row.choices[0].get("text") if row.choices else None) or None
    scores = [f.score for f in feedback]
    return TrafficSummary(
        request_id=row.request_id, at=_iso(row.created_at), endpoint=row.endpoint, model=row.model, version=row.version,
        token=row.token_name, status=row.status, finish_reason=row.finish_reason, prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens, time_to_first_token=row.time_to_first_token,
        total_seconds=row.total_seconds, redacted=row.redacted, feedback=len(scores),
        mean_score=sum(scores) / len(scores) if scores else None, preview=text[:80] if text else None,
    )


@verb("traffic.list", scope="read")
def list_traffic(ctx: Context, req: ListTraffic) -> TrafficList:
    """The project's served requests, newest first: who asked which version, how long it took, feedback.

    Filter by ``model`` (name), ``version`` (NAME@vN) and a ``since``/``until`` window (UTC).
    """
    from weightsmith.serve import log

    rows = log.list_requests(ctx.workspace, limit=req.limit, **req.filters())
    feedback = log.feedback_for(ctx.workspace, [r.request_id for r in rows])
    return TrafficList(requests=[_summary(r, feedback[r.request_id]) for r in rows])


class ShowTraffic(BaseModel):
    request_id: str = Field(min_length=1, max_length=64, description="the response's id (chatcmpl-... or cmpl-...)")


class FeedbackInfo(BaseModel):
    id: int
    request_id: str
    score: float
    comment: str | None
    actor: str
    created_at: str


class TrafficDetail(TrafficSummary):
    model_config = ConfigDict(extra="allow")
    messages: list[dict[str, Any]] | None = Field(description="chat: the request's messages (roles only when redacted)")
    prompt: Any = Field(description="completions: the prompt as sent")
    params: dict[str, Any] = Field(description="the sampling parameters used")
    choices: list[dict[str, Any]] = Field(description="[{index, text, finish_reason, token_ids}]")
    prompt_token_ids: list[Any] | None
    feedback_rows: list[FeedbackInfo] = []


def _feedback_info(row) -> FeedbackInfo:
    return FeedbackInfo(id=row.id, request_id=row.request_id, score=row.score, comment=row.comment, actor=row.actor,
                        created_at=_iso(row.created_at))


@verb("traffic.show", scope="read")
def show_traffic(ctx: Context, req: ShowTraffic) -> TrafficDetail:
    """One served request whole: messages or prompt, every choice with its token ids, timings and feedback.

    Raises:
        NotFound: no such request in the project's log.
    """
    from weightsmith.serve import log

    row = log.get_request(ctx.workspace, req.request_id)
    if row is None:
        raise NotFound(f"no logged request {shorten(req.request_id)}; 'weightsmith traffic list' shows them.")
    feedback = log.feedback_for(ctx.workspace, [row.request_id])[row.request_id]
    return TrafficDetail(**_summary(row, feedback).model_dump(), messages=row.messages, prompt=row.prompt,
                         params=row.params, choices=row.choices, prompt_token_ids=row.prompt_token_ids,
                         feedback_rows=[_feedback_info(f) for f in feedback])


class AddFeedback(BaseModel):
    request_id: str = Field(min_length=1, max_length=64, description="the response's id (chatcmpl-... or cmpl-...)")
    score: float = Field(ge=-1e9, le=1e9, allow_inf_nan=False, description="your scale, e.g. 1 good / 0 bad, or 1..5 stars")
    comment: str | None = Field(None, max_length=10_000)


@verb("traffic.feedback", scope="serve", mutating=True, target=lambda req, res: req.request_id)
def add_feedback(ctx: Context, req: AddFeedback) -> FeedbackInfo:
    """Record a user's score (and comment) on one served response; a request may get several.

    Raises:
        NotFound: no such request in the project's log (another project's, or one not logged because
            the project's logging is off).
    """
    from weightsmith.serve import log
    from weightsmith.workspace.models import RequestFeedback

    if log.get_request(ctx.workspace, req.request_id) is None:
        raise NotFound(f"no logged request {shorten(req.request_id)} in project '{ctx.workspace.project_name}' "
                       "(is the project's request logging off?).")
    with ctx.workspace.session() as s:
        row = RequestFeedback(project_id=ctx.workspace.project_id, request_id=req.request_id, score=req.score,
                              comment=req.comment, actor=ctx.actor.name)
        s.add(row)
        s.flush()
        return _feedback_info(row)


class ExportTraffic(TrafficWindow):
    model: str = Field(max_length=200, description="the model whose requests to export (its name, e.g. quill)")
    to_dataset: str = Field(description="the dataset to add the version to (created if new)")
    format: Literal["chat", "prompt"] = Field(
        "chat", description="chat: the messages plus the served answer, for SFT; prompt: the messages (or the "
        "completions prompt) alone, for RL and evals")
    endpoint: Literal["chat.completions", "completions"] = Field(
        "chat.completions", description="which endpoint's requests; completions (plain-text prompts) only with format prompt")
    min_score: float | None = Field(None, description="only requests whose mean feedback score is at least this")
    include_length: bool = Field(False, description="chat: also answers cut off by max_tokens (finish_reason length)")


class TrafficExported(BaseModel):
    dataset: DatasetVersionInfo
    requests: int = Field(description="requests in the window")
    exported: int = Field(description="rows written (one per request, or per prompt of a completions request)")
    skipped: dict[str, int] = Field(description="rows left out, by reason")


def _export_row(row, req: ExportTraffic) -> tuple[list[dict] | None, str | None]:
    """The dataset rows of one logged request, or why it has none."""
    if row.redacted:
        return None, "redacted"
    if row.status != "ok":
        return None, "cancelled"
    if row.endpoint != req.endpoint:
        return None, f"endpoint {row.endpoint}"
    if req.endpoint == "completions":
        prompts = row.prompt if isinstance(row.prompt, list) and row.prompt and not isinstance(row.prompt[0], int) else [row.prompt]
        if not all(isinstance(prompt, str) for prompt in prompts):
            return None, "token-id prompt"
        return [{"prompt": prompt} for prompt in prompts], None
    messages = [{k: v for k, v in m.items() if k in ("role", "content", "name")} for m in row.messages or []]
    for m in messages:
        if m["role"] == "developer":
            m["role"] = "system"
    if req.format == "prompt":
        return [{"prompt": messages}], None
    first = row.choices[0] if row.choices else None
    if first is None:
        return None, "no answer"
    if first.get("finish_reason") != "stop" and not req.include_length:
        return None, "cut off (length)"
    return [{"messages": [*messages, {"role": "assistant", "content": first.get("text") or ""}]}], None


def _with_scores(ws, entries, wanted: bool, page: int = 500):
    """``(entry, its feedback scores)`` for each entry, the scores read a page of entries at a time."""
    from weightsmith.serve import log

    buffer: list = []

    def drain():
        scores = log.feedback_for(ws, [e.request_id for e in buffer]) if wanted else {}
        for e in buffer:
            yield e, [f.score for f in scores.get(e.request_id, [])]
        buffer.clear()

    for entry in entries:
        buffer.append(entry)
        if len(buffer) >= page:
            yield from drain()
    yield from drain()


@verb("traffic.export", scope="train", mutating=True, target=lambda req, res: res.dataset.ref if res else req.to_dataset)
def export_traffic(ctx: Context, req: ExportTraffic) -> TrafficExported:
    """Turn a window of one model's served requests into a dataset version (chat or prompt), with provenance.

    Each request becomes one row: for ``chat`` its messages followed by the answer it got (answers cut off
    by ``max_tokens`` are left out unless ``include_length``), for ``prompt`` its messages alone (or, with
    ``endpoint: completions``, its text prompt). Redacted and cancelled requests, and those whose mean
    feedback is below ``min_score``, are left out and counted in ``skipped``. The rows pass the same
    validation as an upload; the version's provenance names the window, the versions that answered and
    how many requests it holds. Identical content returns the existing version.

    Raises:
        UserError: no request in the window gives a row, or ``format: chat`` with ``endpoint: completions``.
    """
    from weightsmith.data import ingest
    from weightsmith.data.formats import NO_LIMIT
    from weightsmith.data.formats_rows import ROW_CHECKS
    from weightsmith.names import check_name
    from weightsmith.serve import log

    check_name(req.to_dataset, "dataset")
    if req.format == "chat" and req.endpoint == "completions":
        raise UserError("format chat needs chat requests (endpoint chat.completions); export completions prompts "
                        "with format prompt.")
    filters = req.filters()
    rows: list[dict] = []
    skipped: dict[str, int] = {}
    versions: set[str] = set()
    requests, first, last = 0, None, None
    for entry, scores in _with_scores(ctx.workspace, log.window(ctx.workspace, **filters), req.min_score is not None):
        requests += 1
        if req.min_score is not None and (not scores or sum(scores) / len(scores) < req.min_score):
            skipped["below min_score"] = skipped.get("below min_score", 0) + 1
            continue
        made, why = _export_row(entry, req)
        if made is None:
            skipped[why] = skipped.get(why, 0) + 1
            continue
        for candidate in made:
            problems: list[str] = []
            checked = ROW_CHECKS[req.format](candidate, problems)
            if checked is None or problems:
                skipped["invalid row"] = skipped.get("invalid row", 0) + 1
                continue
            rows.append(candidate)
            versions.add(entry.version)
            first = first or entry.created_at
            last = entry.created_at
    if not rows:
        window = f"model '{req.model}'" + (f" version {req.version}" if req.version else "")
        raise UserError(
            f"no served request of {window} in the window gives a {req.format} row ({requests} request(s) found"
            + (f"; skipped: {', '.join(f'{k} {v}' for k, v in sorted(skipped.items()))}" if skipped else "")
            + "); widen the window or check 'weightsmith traffic list'.")
    provenance = {
        "source": f"traffic:{req.model}",
        "files": [],
        "traffic": {
            "model": req.model, "version": req.version, "endpoint": req.endpoint, "format": req.format,
            "since": _iso(filters["since"]), "until": _iso(filters["until"]), "min_score": req.min_score,
            "include_length": req.include_length, "requests": requests, "rows": len(rows), "skipped": skipped,
            "versions": sorted(versions), "first_request_at": _iso(first), "last_request_at": _iso(last),
            "exported_by": ctx.actor.name,
        },
    }
    tmp_dir = ctx.workspace.dir / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix="traffic-", suffix=".jsonl")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        # Rows the model already took whole: no character cap (as for a stage's output).
        doc = ingest.add_dataset(ctx.workspace, req.to_dataset, tmp, req.format, provenance=provenance,
                                 max_chars=NO_LIMIT)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return TrafficExported(dataset=DatasetVersionInfo(**ctx.public(doc)), requests=requests, exported=len(rows),
                           skipped=skipped)


class LoggingSetting(BaseModel):
    project: str
    mode: LoggingMode = Field(description="full: everything; redacted: no text or token ids (counts, timings, "
                              "versions stay); off: nothing is logged")
    updated_by: str | None = None
    updated_at: str | None = None


class ShowLogging(BaseModel):
    pass


@verb("traffic.logging", scope="read")
def show_logging(ctx: Context, req: ShowLogging) -> LoggingSetting:
    """What the request log keeps of this project's served traffic: full (default), redacted or off."""
    from weightsmith.workspace.models import ProjectSetting
    from weightsmith.workspace.settings import SERVE_LOGGING

    ws = ctx.workspace
    with ws.session() as s:
        row = s.get(ProjectSetting, (ws.project_id, SERVE_LOGGING))
        if row is None:
            return LoggingSetting(project=ws.project_name, mode="full")
        return LoggingSetting(project=ws.project_name, mode=row.value, updated_by=row.updated_by,
                              updated_at=_iso(row.updated_at))


class SetLogging(BaseModel):
    mode: LoggingMode = Field(description="full | redacted | off")


@verb("traffic.set_logging", scope="admin", mutating=True, target=lambda req, res: f"serve.logging={req.mode}")
def set_logging(ctx: Context, req: SetLogging) -> LoggingSetting:
    """Choose what the request log keeps of this project's traffic; a running server follows within a second.

    ``full``: messages, outputs and token ids; ``redacted``: no text or token ids, but versions, counts,
    finish reasons and timings (feedback still works); ``off``: nothing (feedback then has nothing to
    attach to). Rows already written are not changed.
    """
    from weightsmith.workspace.settings import SERVE_LOGGING, set_setting

    ws = ctx.workspace
    with ws.write() as s:
        row = set_setting(s, ws.project_id, SERVE_LOGGING, req.mode, ctx.actor.name)
        return LoggingSetting(project=ws.project_name, mode=row.value, updated_by=row.updated_by,
                              updated_at=_iso(row.updated_at))
