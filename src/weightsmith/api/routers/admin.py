"""``/v1/tokens``, ``/v1/audit`` and ``/v1/workspace/gc``: a project admin's view (the ``admin`` scope)."""

from __future__ import annotations

from fastapi import APIRouter, Query

from weightsmith.api.app import Ctx, IdempotencyKey
from weightsmith.service import gc, projects
from weightsmith.service.gc import CollectGarbage, GarbageCollected
from weightsmith.service.projects import AuditList, CreatedToken, CreateToken, ListAudit, RevokeToken, TokenInfo, TokenList

router = APIRouter(tags=["admin"])


@router.post("/tokens", status_code=201, response_model=CreatedToken)
def create_token(body: CreateToken, ctx: Ctx, key: IdempotencyKey = None) -> CreatedToken:
    """Create a token in the caller's project; the secret is in this response only."""
    return projects.create_token(ctx, body, idempotency_key=key)


@router.get("/tokens", response_model=TokenList)
def list_tokens(ctx: Ctx) -> TokenList:
    """The project's tokens (never their secrets)."""
    return projects.list_tokens(ctx, {})


@router.post("/tokens/{id}/revoke", response_model=TokenInfo)
def revoke_token(id: int, ctx: Ctx, key: IdempotencyKey = None) -> TokenInfo:
    """Revoke a token: later calls with it get 401."""
    return projects.revoke_token(ctx, {"id": id}, idempotency_key=key)


@router.get("/audit", response_model=AuditList)
def list_audit(ctx: Ctx, limit: int = Query(100, ge=1, le=10_000), verb: str | None = None) -> AuditList:
    """The project's audit log, newest first."""
    return projects.list_audit(ctx, ListAudit(limit=limit, verb=verb))


@router.post("/workspace/gc", response_model=GarbageCollected)
def collect_garbage(body: CollectGarbage, ctx: Ctx, key: IdempotencyKey = None) -> GarbageCollected:
    """Free the disk of the project's ended jobs (checkpoints, intermediate files); ``dry_run`` only reports."""
    return gc.collect_garbage(ctx, body, idempotency_key=key)
