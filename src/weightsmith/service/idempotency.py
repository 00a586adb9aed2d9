"""Idempotency keys, on Stripe's contract: replay, mismatch, in flight — three answers.

A verb that accepts an ``idempotency_key`` runs its work through :func:`run_once`:

- a new key: the work runs once and its response is stored under the key;
- the same key with the same request (same digest): the stored response, nothing re-run, no rows;
- the same key with another request: :class:`~weightsmith.errors.UserError` (HTTP 422, CLI exit 2);
- the same key while the first request is still running: :class:`~weightsmith.errors.Conflict` (409).

Two concurrent first requests race on the table's unique constraint, so exactly one runs the work
and the other gets the in-flight answer (and, once it is done, the replay). A request whose work
fails leaves no record, so the client may retry under the same key (Stripe keeps errors only for
requests that began executing; ours refuse before anything is written, so there is nothing to keep).
A record left in flight by a process that died is released after ``IN_FLIGHT_TIMEOUT_S``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from weightsmith.errors import Conflict, UserError
from weightsmith.service.context import Context
from weightsmith.service.verbs import request_digest
from weightsmith.workspace.models import IdempotencyRecord, utcnow

Result = TypeVar("Result", bound=BaseModel)
MAX_KEY_CHARS = 200
# A request still "in flight" this long after it began died with its process (no verb that takes a key runs
# this long: submissions queue jobs, they do not run them), so a new request may take the key.
IN_FLIGHT_TIMEOUT_S = 600


def run_once(ctx: Context, verb: str, key: str | None, request: BaseModel, result_model: type[Result],
             work: Callable[[], Result]) -> tuple[Result, bool]:
    """Run ``work`` at most once per ``(project, verb, key)``; returns ``(result, replayed)``.

    Raises:
        UserError: the key was used for a different request, or is empty or too long.
        Conflict: the first request with this key has not finished.
    """
    if key is None:
        return work(), False
    if not key.strip() or len(key) > MAX_KEY_CHARS:
        raise UserError(f"an idempotency key is 1 to {MAX_KEY_CHARS} characters; got {len(key)}.")
    ws = ctx.workspace
    digest = request_digest(request)
    try:
        with ws.session() as s:
            s.add(IdempotencyRecord(project_id=ws.project_id, verb=verb, key=key, request_digest=digest))
    except IntegrityError:
        if _release_if_abandoned(ctx, verb, key):  # its process died mid-request: this one takes the key
            return run_once(ctx, verb, key, request, result_model, work)
        return _existing(ctx, verb, key, digest, result_model), True
    try:
        result = work()
    except BaseException:
        with ws.session() as s:
            s.execute(delete(IdempotencyRecord).where(*_where(ws.project_id, verb, key)))
        raise
    with ws.session() as s:
        record = s.scalar(select(IdempotencyRecord).where(*_where(ws.project_id, verb, key)))
        record.state = "done"
        record.response = result.model_dump(mode="json")
        record.finished_at = utcnow()
    return result, False


def _release_if_abandoned(ctx: Context, verb: str, key: str) -> bool:
    """Delete an in-flight record older than ``IN_FLIGHT_TIMEOUT_S`` (its request's process died); True if it was."""
    cutoff = utcnow() - timedelta(seconds=IN_FLIGHT_TIMEOUT_S)
    with ctx.workspace.session() as s:
        gone = s.execute(delete(IdempotencyRecord).where(
            *_where(ctx.workspace.project_id, verb, key), IdempotencyRecord.state == "in_flight",
            IdempotencyRecord.created_at < cutoff)).rowcount
    return gone == 1


def _where(project_id: int, verb: str, key: str) -> tuple[Any, ...]:
    return (IdempotencyRecord.project_id == project_id, IdempotencyRecord.verb == verb, IdempotencyRecord.key == key)


def _existing(ctx: Context, verb: str, key: str, digest: str, result_model: type[Result]) -> Result:
    with ctx.workspace.session() as s:
        record = s.scalar(select(IdempotencyRecord).where(*_where(ctx.workspace.project_id, verb, key)))
    if record is None:  # the first request failed and let the key go between our insert and this read
        raise Conflict(f"idempotency key '{key}' was just released by a failed request; send this request again.")
    if record.request_digest != digest:
        raise UserError(
            f"idempotency key '{key}' was already used for a different {verb} request; "
            "use a new key for a new request."
        )
    if record.state != "done":
        raise Conflict(f"a {verb} request with idempotency key '{key}' is still in progress; retry when it has finished.")
    return result_model.model_validate(record.response)
