"""The verb registry: every verb once, with its scope, its audit row and its request/result models.

A verb is ``fn(ctx, request) -> result`` decorated with :func:`verb`. The decorator is where
policy lives, so no adapter can skip it:

- the actor must hold the verb's scope (:class:`~weightsmith.errors.Forbidden` otherwise);
- a request given as a dict is validated into the verb's pydantic request model, and a bad one is
  one :class:`~weightsmith.errors.UserError` sentence naming the field;
- every call of a *mutating* verb writes an audit row (actor, adapter, verb, target, a digest of the
  request, the outcome), whether it succeeded or failed.

The adapters read :data:`VERBS` to build themselves: the MCP server makes one tool per verb (its
input schema is the request model, its description the verb's docstring), the REST API's routes
each call one verb, and the CLI calls them by function.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from weightsmith.errors import Conflict, Forbidden, GateRefused, NotFound, Unauthorized, UserError
from weightsmith.service.context import Context

Req = TypeVar("Req", bound=BaseModel)


@dataclass(frozen=True)
class Verb:
    """One registered verb: ``call(ctx, request)`` applies the policy, then runs ``fn``."""

    name: str
    call: Callable[[Context, Any], Any]
    request: type[BaseModel]
    result: Any
    scope: str
    mutating: bool
    doc: str
    local_only: bool = False  # blocks for minutes (an inline eval): the CLI's, not a remote client's

    @property
    def summary(self) -> str:
        return self.doc.strip().splitlines()[0] if self.doc.strip() else self.name


VERBS: dict[str, Verb] = {}


def error_kind(exc: BaseException) -> str:
    """The outcome word an audit row and an adapter use for an exception."""
    for cls, word in (
        (NotFound, "not_found"), (Unauthorized, "unauthorized"), (Forbidden, "forbidden"),
        (Conflict, "conflict"), (UserError, "bad_request"), (GateRefused, "gate_refused"),
    ):
        if isinstance(exc, cls):
            return word
    return "error"


def request_digest(request: BaseModel) -> str:
    """sha256 of the request's canonical JSON: the audit log's and idempotency's fingerprint of a call."""
    payload = request.model_dump(mode="json", exclude={"idempotency_key"})
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def parse_request(model: type[Req], raw: Any, verb_name: str) -> Req:
    """Validate ``raw`` (a dict or the model itself) into ``model``; a bad field is one UserError sentence."""
    if isinstance(raw, model):
        return raw
    try:
        return model.model_validate(raw or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "request"
        raise UserError(f"{verb_name}: {where}: {first['msg']}.") from None


def verb(name: str, *, scope: str, mutating: bool = False, target: Callable[[Any, Any], str | None] | None = None,
         local_only: bool = False, replayable: bool = True):
    """Register ``fn(ctx, request) -> result`` as the verb ``name`` (e.g. ``"datasets.add"``).

    The registered callable is ``call(ctx, request, *, idempotency_key=None)``: ``request`` may be the
    request model or a dict; a mutating verb called with an ``idempotency_key`` runs at most once per key
    (see :mod:`weightsmith.service.idempotency`).

    Args:
        name: ``resource.action``; the MCP tool is named ``resource_action``.
        scope: the token scope the verb needs (see :data:`weightsmith.service.context.SCOPES`).
        mutating: writes state; every call is then audited.
        target: ``target(request, result)`` → what the audit row names (e.g. ``docs@v2``); result
            is None when the verb failed.
        local_only: the verb computes inline for minutes; the remote adapters (REST, MCP) offer its
            job-starting twin instead, so no remote call blocks that long.
        replayable: an idempotency key may store and replay its result (not so for a secret shown once).
    """

    def register(fn: Callable[[Context, Any], Any]) -> Callable[[Context, Any], Any]:
        hints = typing.get_type_hints(fn)
        params = list(inspect.signature(fn).parameters)
        request_model = hints[params[1]]
        result_model = hints.get("return")

        @functools.wraps(fn)
        def call(ctx: Context, request: Any = None, *, idempotency_key: str | None = None) -> Any:
            if not mutating:
                req = parse_request(request_model, request, name)
                ctx.actor.require(scope, name)
                return fn(ctx, req)
            req = None
            try:
                req = parse_request(request_model, request, name)
                ctx.actor.require(scope, name)
                if idempotency_key is not None and not replayable:
                    raise UserError(f"{name} cannot be replayed under an idempotency key (what it returns is shown "
                                    "once and never stored); send it without one.")
                if idempotency_key is None:
                    result = fn(ctx, req)
                else:  # Stripe's contract for any mutating verb (see weightsmith.service.idempotency)
                    from weightsmith.service.idempotency import run_once

                    result, _replayed = run_once(ctx, name, idempotency_key, req, result_model, lambda: fn(ctx, req))
            except BaseException as exc:
                if not isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    _audit(ctx, name, req if req is not None else request, error_kind(exc), _target(target, req, None),
                           str(exc)[:500])
                raise
            _audit(ctx, name, req, "ok", _target(target, req, result), None)
            return result

        VERBS[name] = Verb(name, call, request_model, result_model, scope, mutating, inspect.getdoc(fn) or "", local_only)
        return call

    return register


def _target(target, req, result) -> str | None:
    if target is None:
        return None
    try:
        return target(req, result)
    except (AttributeError, KeyError, TypeError):  # a failed call may have no result to name
        return None


def _audit(ctx: Context, verb_name: str, req: Any, outcome: str, target: str | None, detail: str | None) -> None:
    from weightsmith.workspace.models import AuditEntry

    ws = ctx.workspace
    with ws.session() as s:
        s.add(AuditEntry(
            project_id=ws.project_id, actor=ctx.actor.name, actor_kind=ctx.actor.kind, adapter=ctx.adapter,
            verb=verb_name, target=target, request_digest=_digest_of(req), outcome=outcome, detail=detail,
        ))


def _digest_of(req: Any) -> str:
    """The request's digest, also for one that failed validation (then of its raw JSON, as far as it is JSON)."""
    if isinstance(req, BaseModel):
        return request_digest(req)
    raw = json.dumps(req, sort_keys=True, default=str) if req is not None else ""
    return hashlib.sha256(raw.encode()).hexdigest()


def check_scope(ctx: Context, verb_name: str) -> None:
    """The verb's scope check, for an adapter about to do costly work for it (read a large upload); audited
    like the verb's own check.

    Raises:
        Forbidden: the actor lacks the verb's scope.
    """
    registered = VERBS[verb_name]
    try:
        ctx.actor.require(registered.scope, verb_name)
    except Forbidden as exc:
        _audit(ctx, verb_name, None, error_kind(exc), None, str(exc)[:500])
        raise
