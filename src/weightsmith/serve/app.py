"""The OpenAI-compatible server: a FastAPI app whose wire format is OpenAI's, not the REST API's.

``create_serve_app(workspace, pool=...)`` builds it; ``weightsmith serve quill@champion --port 8000``
serves it with uvicorn. Routes:

- ``POST /v1/chat/completions``, ``POST /v1/completions``: generation (``stream: true`` as server-sent
  events ending in ``data: [DONE]``; ``stream_options.include_usage`` adds a last chunk with usage);
- ``GET /v1/models``, ``GET /v1/models/{model}``: the names a caller may use, and the version each names now;
- ``POST /v1/feedback``: ``{request_id, score, comment}`` on a logged response;
- ``GET /health`` (no credentials) and ``GET /metrics`` (Prometheus text, the caller's project only).

Shutdown drains (:class:`DrainingServer`): on SIGTERM or SIGINT the server keeps listening while the
requests in flight finish, ``/health`` answers 503 ``{"status": "draining"}`` (so a load balancer stops
sending), and new generation requests get 503 with ``Retry-After``; then uvicorn shuts down and the
engines and the request log close. A second signal shuts down at once.

Every response's ``model`` is the concrete version that answered (``quill@v4``), and its ``id`` is the
request id the request log and feedback use. Credentials: ``Authorization: Bearer TOKEN`` where TOKEN is
a project token with the ``serve`` scope (``weightsmith tokens create --scope serve``), whose project's
models are the only ones it sees; or, for a single-tenant server started with ``--api-key``, that key,
which sees the server's project. Errors are OpenAI's ``{"error": {"message", "type", "param", "code"}}``:
400 bad input, 401 no or bad credentials, 403 no ``serve`` scope, 404 unknown model or request, 503 with
``Retry-After`` when the version's queue is full.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
import uvicorn
from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from weightsmith import __version__
from weightsmith.errors import Forbidden, NotFound, Unauthorized, UserError
from weightsmith.serve import completions as gen
from weightsmith.serve import protocol as p
from weightsmith.serve.log import RequestLog
from weightsmith.serve.metrics import CONTENT_TYPE, Metrics
from weightsmith.serve.pool import HTTP_LISTING, EnginePool, Resolved, resolve
from weightsmith.service.context import Actor
from weightsmith.workspace import Workspace

log = logging.getLogger("weightsmith.serve")

MAX_BODY_BYTES = 32 * 1024 * 1024
"""The largest request body read (a 413 beyond): far more text than any context holds."""
AUTH_CACHE_SECONDS = 5.0
"""How long a checked token is trusted without asking the database again (so a revocation takes up to this long)."""
API_KEY_ACTOR = "api-key"


@dataclass(frozen=True)
class Caller:
    """Who is calling: their actor (project, scopes) and the workspace seen from that project."""

    actor: Actor
    workspace: Workspace


class Serving:
    """What every route shares: the workspace, the engines, the request log, the metrics and the credentials.

    Args:
        workspace: the workspace whose registry names the versions (and whose database keeps the log).
        pool: the loaded engines.
        request_log: the background writer of the request log (made here when None).
        api_key: a single-tenant server's key; then project tokens are not accepted, and the key's
            caller is the workspace's current project.
    """

    def __init__(self, workspace: Workspace, pool: EnginePool, *, request_log: RequestLog | None = None,
                 api_key: str | None = None):
        self.workspace = workspace
        self.pool = pool
        self.request_log = request_log or RequestLog(workspace)
        self.metrics = Metrics(pool)
        self.api_key = api_key
        self._tokens: dict[str, tuple[float, Caller]] = {}
        self._projects: dict[str, Workspace] = {}
        self._lock = threading.Lock()
        self.draining = False  # set on the first shutdown signal: /health answers 503, new generations too
        self.in_flight = 0  # generation requests being answered (streams until their last byte); event loop only

    def project_workspace(self, project: str) -> Workspace:
        """The workspace seen from ``project``, kept, so its project id is looked up once."""
        with self._lock:
            found = self._projects.get(project)
            if found is None:
                found = self._projects[project] = (
                    self.workspace if project == self.workspace.project_name else self.workspace.for_project(project))
            return found

    def authenticate(self, bearer: str | None) -> Caller:
        """The caller a bearer credential stands for (blocking: the first check of a token reads the database).

        Raises:
            Unauthorized: no credential, or an unknown, revoked or wrong one.
            Forbidden: a project token without the ``serve`` scope.
        """
        if self.api_key is not None:
            if not bearer or not hmac.compare_digest(bearer.encode(), self.api_key.encode()):
                raise Unauthorized("this server needs 'Authorization: Bearer KEY' with the key it was started with (--api-key).")
            project = self.workspace.project_name
            actor = Actor(name=API_KEY_ACTOR, kind="token", project=project, scopes=frozenset({"serve"}), remote=True)
            return Caller(actor, self.project_workspace(project))
        if not bearer:
            raise Unauthorized("this call needs 'Authorization: Bearer TOKEN', a project token with the 'serve' scope "
                               "('weightsmith tokens create --scope serve ...').")
        caller = self.known_caller(bearer)
        if caller is None:
            from weightsmith.service.projects import authenticate

            actor = authenticate(self.workspace, bearer)
            caller = Caller(actor, self.project_workspace(actor.project))
            if len(self._tokens) > 10_000:
                self._tokens.clear()
            self._tokens[hashlib.sha256(bearer.encode()).hexdigest()] = (time.monotonic() + AUTH_CACHE_SECONDS, caller)
        caller.actor.require("serve", "the served models")
        return caller

    def known_caller(self, bearer: str | None) -> Caller | None:
        """The caller of a project token checked in the last :data:`AUTH_CACHE_SECONDS` (no database read), else None."""
        if not bearer or self.api_key is not None:
            return None
        cached = self._tokens.get(hashlib.sha256(bearer.encode()).hexdigest())
        return cached[1] if cached is not None and cached[0] > time.monotonic() else None

    def resolve(self, caller: Caller, model: str) -> Resolved:
        """The version ``model`` names now in the caller's project (blocking: one database read).

        Raises:
            NotFound: no such model, version or alias there (404 ``model_not_found``).
        """
        return resolve(caller.workspace, model, listing=HTTP_LISTING)

    def close(self) -> None:
        """Finish what the engines hold, close them and write the rest of the request log (the requests whose
        clients went away included: their rows are queued by threads of their own)."""
        self.draining = True
        self.pool.close(drain=True)
        gen.wait_for_abandoned()
        self.request_log.close()


# -- errors ------------------------------------------------------------------------------------------
def _error(status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
           code: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(p.OpenAIError(status, message, type=type, param=param, code=code).body(), status_code=status,
                        headers=headers)


def _user_error(exc: UserError) -> JSONResponse:
    if isinstance(exc, Unauthorized):
        return _error(401, str(exc), type="authentication_error", code="invalid_api_key",
                      headers={"WWW-Authenticate": "Bearer"})
    if isinstance(exc, Forbidden):
        return _error(403, str(exc), type="permission_error", code="insufficient_scope")
    if isinstance(exc, NotFound):
        return _error(404, str(exc), param="model", code="model_not_found")
    return _error(400, str(exc))


def _validation_message(error: dict[str, Any]) -> tuple[str, str | None]:
    loc = [str(part) for part in error.get("loc", ()) if part != "body"]
    # a union's branches add their type names to the path (messages.0.content.str): not a field
    loc = [part for part in loc if part not in ("str", "int", "float", "bool", "none") and "[" not in part]
    param = ".".join(loc) or None
    return (f"{param}: {error.get('msg', 'invalid value')}." if param else f"{error.get('msg', 'invalid request')}."), param


# -- the app -----------------------------------------------------------------------------------------
def _bearer(authorization: Annotated[str | None, Header(description="Bearer TOKEN (a project token with the serve scope, "
                                                                    "or the server's --api-key)")] = None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def caller(request: Request, token: Annotated[str | None, Depends(_bearer)]) -> Caller:
    serving: Serving = request.app.state.serving
    known = serving.known_caller(token)
    if known is not None or serving.api_key is not None:  # no database to read: stay on the event loop
        found = serving.authenticate(token)
    else:
        found = await anyio.to_thread.run_sync(serving.authenticate, token)
    request.state.project = found.actor.project
    return found


CallerDep = Annotated[Caller, Depends(caller)]
ERRORS = {code: {"model": p.ErrorResponse} for code in (400, 401, 403, 404, 503)}


def create_serve_app(serving: Serving) -> FastAPI:
    """The OpenAI-compatible app over ``serving`` (its lifespan closes ``serving`` on shutdown: in-flight
    requests finish first, as uvicorn waits for them, then the engines and the request log)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        await anyio.to_thread.run_sync(serving.close)

    app = FastAPI(title="weightsmith serve", version=__version__, lifespan=lifespan,
                  description="OpenAI-compatible endpoints over a workspace's model versions.")
    app.state.serving = serving
    app.add_middleware(_CountRequests)

    @app.exception_handler(p.OpenAIError)
    async def _openai_error(_request: Request, exc: p.OpenAIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(UserError)
    async def _user(_request: Request, exc: UserError) -> JSONResponse:
        return _user_error(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return _error(400, "the request body is not valid JSON; send a JSON object.", code="invalid_json")
        message, param = _validation_message(errors[0]) if errors else ("invalid request.", None)
        return _error(400, message, param=param, code="invalid_value")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and "parsing the body" in str(exc.detail):  # e.g. bytes that are not UTF-8
            return _error(400, "the request body could not be read as JSON (is it UTF-8?); send a JSON object.",
                          code="invalid_json")
        return _error(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None,
                      headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:  # a bug of ours: say so, stay up
        log.exception("unexpected error")
        return _error(500, f"internal error ({type(exc).__name__}); the server log has the details.", type="server_error")

    @app.post("/v1/chat/completions", response_model=p.ChatCompletion, responses=ERRORS, tags=["openai"])
    async def chat_completions(body: p.ChatCompletionRequest, request: Request, who: CallerDep):
        """Answer a conversation with the named version (OpenAI's Chat Completions)."""
        return await _generate(request, who, gen.CHAT, body)

    @app.post("/v1/completions", response_model=p.Completion, responses=ERRORS, tags=["openai"])
    async def text_completions(body: p.CompletionRequest, request: Request, who: CallerDep):
        """Continue a plain-text prompt with the named version (OpenAI's legacy Completions)."""
        return await _generate(request, who, gen.COMPLETIONS, body)

    @app.get("/v1/models", response_model=p.ModelCardList, responses=ERRORS, tags=["openai"])
    async def list_models(who: CallerDep) -> p.ModelCardList:
        """Every name the caller may use: each version, each alias, and a bare name where it has a champion."""
        return await anyio.to_thread.run_sync(_model_cards, who)

    @app.get("/v1/models/{model}", response_model=p.ModelCard, responses=ERRORS, tags=["openai"])
    async def retrieve_model(model: str, who: CallerDep) -> p.ModelCard:
        """One name and the concrete version it names now."""
        resolved = await anyio.to_thread.run_sync(serving.resolve, who, model)
        return p.ModelCard(id=model, created=0, owned_by=resolved.project, root=resolved.ref)

    @app.post("/v1/feedback", response_model=p.FeedbackRecorded, responses=ERRORS, tags=["feedback"])
    async def feedback(body: p.FeedbackRequest, who: CallerDep) -> p.FeedbackRecorded:
        """Record a user's score (and comment) on a logged response, by its id."""
        return await anyio.to_thread.run_sync(_record_feedback, serving, who, body)

    @app.get("/health", tags=["operations"])
    async def health() -> dict[str, str]:
        """200 ``{"status": "ok"}`` while serving (no credentials needed); 503 ``{"status": "draining"}`` from the
        shutdown signal on, while the requests in flight finish."""
        if serving.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        return {"status": "ok"}

    @app.get("/metrics", response_class=Response, responses=ERRORS, tags=["operations"])
    async def metrics(who: CallerDep) -> Response:
        """Prometheus metrics of the caller's project: requests, tokens, latency, queue depth, batch sizes."""
        return Response(serving.metrics.project(who.actor.project).exposition(), media_type=CONTENT_TYPE)

    return app


async def _generate(request: Request, who: Caller, endpoint: str, body) -> Any:
    serving: Serving = request.app.state.serving
    flight = gen.Flight(serving=serving, caller=who, endpoint=endpoint, body=body, request_id=gen.new_request_id(endpoint))
    request.state.flight = flight
    try:
        await anyio.to_thread.run_sync(gen.prepare, flight)
        return await gen.answer(flight, client_gone=functools.partial(_client_gone, request))
    except BaseException:
        gen.finish(flight, None)
        raise


async def _client_gone(request: Request) -> None:
    """Returns when the client has disconnected: once the body is read, the next ASGI message is the disconnect."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class DrainingServer(uvicorn.Server):
    """uvicorn that drains before it shuts down.

    The first SIGTERM/SIGINT marks ``serving`` draining (``/health`` 503, new generation requests 503) and keeps
    the server listening until no generation request is in flight (``serving.in_flight``) or ``drain_seconds``
    have passed; then uvicorn's own graceful shutdown runs (which waits for open connections). A second signal
    goes straight to that shutdown, as with plain uvicorn. uvicorn alone would stop listening at the first signal,
    so nobody could see the server draining.
    """

    def __init__(self, config: uvicorn.Config, serving: Serving, drain_seconds: float = 60.0):
        super().__init__(config)
        self.serving = serving
        self.drain_seconds = drain_seconds
        self._drain_until: float | None = None
        self._announced = False

    def handle_exit(self, sig, frame) -> None:
        if self._drain_until is None and not self.should_exit:  # a signal handler: no logging here (its locks)
            self.serving.draining = True
            self._drain_until = time.monotonic() + self.drain_seconds
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._drain_until is not None and not self.should_exit:
            if self.serving.in_flight == 0 or time.monotonic() > self._drain_until:
                self.should_exit = True
            elif not self._announced:
                self._announced = True
                log.warning("draining: %d request(s) in flight; a second signal stops at once", self.serving.in_flight)
        return await super().on_tick(counter)


def _model_cards(who: Caller) -> p.ModelCardList:
    from sqlalchemy import select

    from weightsmith.workspace.models import Model, ModelAlias

    ws = who.workspace
    cards = []
    with ws.session() as s:
        for model in s.scalars(select(Model).where(Model.project_id == ws.project_id).order_by(Model.name)):
            by_id = {mv.id: mv for mv in model.versions}
            aliases = s.scalars(select(ModelAlias).where(ModelAlias.model_id == model.id).order_by(ModelAlias.name)).all()
            for alias in aliases:
                mv = by_id.get(alias.model_version_id)
                if mv is None:
                    continue
                ref = f"{model.name}@v{mv.version}"
                if alias.name == "champion":
                    cards.append(p.ModelCard(id=model.name, created=_unix(mv.created_at), owned_by=ws.project_name, root=ref))
                cards.append(p.ModelCard(id=f"{model.name}@{alias.name}", created=_unix(mv.created_at),
                                         owned_by=ws.project_name, root=ref))
            for mv in model.versions:
                ref = f"{model.name}@v{mv.version}"
                cards.append(p.ModelCard(id=ref, created=_unix(mv.created_at), owned_by=ws.project_name, root=ref))
    return p.ModelCardList(data=cards)


def _unix(value) -> int:
    from datetime import timezone

    return int(value.replace(tzinfo=timezone.utc).timestamp())


def _record_feedback(serving: Serving, who: Caller, body: p.FeedbackRequest) -> p.FeedbackRecorded:
    from weightsmith.service import Context, traffic

    serving.request_log.flush(timeout=10)  # a response from a moment ago is in the log before we look for it
    ctx = Context.for_actor(serving.workspace, who.actor, adapter="api")
    try:
        done = traffic.add_feedback(ctx, {"request_id": body.request_id, "score": body.score, "comment": body.comment})
    except NotFound as exc:
        raise p.OpenAIError(404, str(exc), param="request_id", code="request_not_found") from None
    return p.FeedbackRecorded(id=done.id, request_id=done.request_id, score=done.score, comment=done.comment,
                              created=_unix_iso(done.created_at))


def _unix_iso(text: str) -> int:
    from datetime import datetime, timezone

    return int(datetime.fromisoformat(text.rstrip("Z")).replace(tzinfo=timezone.utc).timestamp())


def _as_json(scope):
    """The body read as JSON whatever the Content-Type says: ``curl -d '{...}'`` sends it as a form, and
    OpenAI's endpoints read it as JSON all the same."""
    headers = [(k, v) for k, v in scope.get("headers") or [] if k != b"content-type"]
    return {**scope, "headers": [*headers, (b"content-type", b"application/json")]}


async def _read_capped(receive) -> list[dict] | None:
    """A request body's ASGI messages as they come, or None once they outgrow :data:`MAX_BODY_BYTES`."""
    messages, size = [], 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":  # the client went away
            return messages
        size += len(message.get("body", b""))
        if size > MAX_BODY_BYTES:
            return None
        if not message.get("more_body", False):
            return messages


def _replay(messages: list[dict], receive):
    """``receive`` that hands out ``messages`` first, then what the connection sends (a disconnect)."""
    pending = list(messages)

    async def replayed():
        return pending.pop(0) if pending else await receive()

    return replayed


class _CountRequests:
    """Counts every answered request of a known route in its project's metrics, by status, reads POST bodies
    as JSON, and refuses a body over :data:`MAX_BODY_BYTES` (by its Content-Length before it is read, or as a
    chunked one outgrows it) (pure ASGI, so streams pass through untouched)."""

    ROUTES = {"/v1/chat/completions": gen.CHAT, "/v1/completions": gen.COMPLETIONS, "/v1/models": "models",
              "/v1/feedback": "feedback"}

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
            await _error(413, f"the request body is {int(length):,} bytes; at most {MAX_BODY_BYTES:,} are read.",
                         code="request_too_large")(scope, receive, send)
            return
        if length is None and scope.get("method") in ("POST", "PUT", "PATCH"):
            # A body without a Content-Length (chunked) is counted as it comes, so it cannot outgrow the limit either.
            messages = await _read_capped(receive)
            if messages is None:
                await _error(413, f"the request body is over {MAX_BODY_BYTES:,} bytes, the most that is read.",
                             code="request_too_large")(scope, receive, send)
                return
            receive = _replay(messages, receive)
        endpoint = self.ROUTES.get(scope.get("path", ""))
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        if scope.get("method") == "POST":
            scope = _as_json(scope)
        status = {"code": 500}

        async def record_status(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        serving: Serving = scope["app"].state.serving
        generating = endpoint in (gen.CHAT, gen.COMPLETIONS)
        serving.in_flight += generating
        try:
            await self.app(scope, receive, record_status)
        finally:
            serving.in_flight -= generating
            state = scope.get("state") or {}
            project = state.get("project")
            if project is not None:
                flight = state.get("flight")
                serving.metrics.count(project, endpoint, flight.version if flight else "", status["code"])
