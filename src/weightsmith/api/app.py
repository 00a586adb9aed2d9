"""The REST API: a FastAPI app whose every route is one call of a service verb.

``create_app(workspace)`` builds it; ``weightsmith api --host 127.0.0.1 --port 8100`` serves it with
uvicorn. Every route needs ``Authorization: Bearer TOKEN`` (a project token from ``weightsmith tokens
create``); the token's project is the tenant, its scopes what it may do. Errors are JSON bodies
``{"error": {"type", "message", "details"}}`` with 400/401/403/404/409/422 — never a 500 for bad
input. The OpenAPI document is at ``/openapi.json``, generated from the service's request and
result models.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from weightsmith import __version__
from weightsmith.errors import Conflict, Forbidden, NotFound, Unauthorized, UserError
from weightsmith.service import Context
from weightsmith.service.context import model_dirs_from_env
from weightsmith.service.projects import authenticate
from weightsmith.service.verbs import error_kind
from weightsmith.workspace import Workspace

log = logging.getLogger("weightsmith.api")

STATUS = {NotFound: 404, Unauthorized: 401, Forbidden: 403, Conflict: 409}


def status_of(exc: UserError) -> int:
    for cls, code in STATUS.items():
        if isinstance(exc, cls):
            return code
    return 422


def error_body(kind: str, message: str, details: list[str] | None = None) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message, "details": details or []}}


def _bearer(authorization: Annotated[str | None, Header(description="Bearer TOKEN")] = None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def context(request: Request, token: Annotated[str | None, Depends(_bearer)]) -> Context:
    """The caller's context: their token's project and scopes, remote (no server paths)."""
    ws: Workspace = request.app.state.workspace
    actor = authenticate(ws, token)
    return Context.for_actor(ws, actor, adapter="api", model_dirs=request.app.state.model_dirs)


Ctx = Annotated[Context, Depends(context)]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", description="Stripe-style: the same key and body return the first response")]


def create_app(workspace: Workspace, *, model_dirs=None) -> FastAPI:
    """The API over ``workspace``; ``model_dirs``: folders remote callers may name as models (default: WEIGHTSMITH_MODEL_DIRS)."""
    from weightsmith.api.routers import admin, datasets, evals, jobs, models, pipelines, traffic

    app = FastAPI(
        title="weightsmith",
        version=__version__,
        description="Own your language models: datasets, pipelines, jobs, models, evals and gates for a project.",
    )
    app.state.workspace = workspace
    app.state.model_dirs = tuple(model_dirs) if model_dirs is not None else model_dirs_from_env()

    @app.exception_handler(UserError)
    async def _user_error(_request: Request, exc: UserError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
        return JSONResponse(error_body(error_kind(exc), str(exc), list(getattr(exc, "errors", []) or [])),
                            status_code=status_of(exc), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        status = 400 if any(e.get("type") == "json_invalid" for e in exc.errors()) else 422
        return JSONResponse(error_body("bad_request", problems[0] if problems else "invalid request", problems),
                            status_code=status)

    @app.exception_handler(ValidationError)
    async def _model_error(_request: Request, exc: ValidationError) -> JSONResponse:  # a request model built in a route
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return JSONResponse(error_body("bad_request", problems[0] if problems else "invalid request", problems), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body("http", str(exc.detail)), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:  # a bug of ours: say so, stay up
        log.exception("unexpected error")
        return JSONResponse(error_body("internal", f"internal error ({type(exc).__name__}); the server log has the details"),
                            status_code=500)

    @app.get("/health", tags=["health"])
    def health() -> dict[str, str]:
        """Liveness: 200 while the server runs (no token needed)."""
        return {"status": "ok"}

    for router in (datasets.router, pipelines.router, jobs.router, models.router, evals.router, admin.router,
                   traffic.router):
        app.include_router(router, prefix="/v1")
    return app
