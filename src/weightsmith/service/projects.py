"""Projects (tenants), their bearer tokens, and the audit log.

A token belongs to one project and carries scopes; it is printed once, when created, and only its
sha256 is stored, so a stolen database yields no usable token. :func:`authenticate` turns a bearer
token into an :class:`~weightsmith.service.context.Actor` for the REST API and the MCP server.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime

from pydantic import BaseModel, Field
from sqlalchemy import select

from weightsmith.errors import NotFound, Unauthorized, UserError
from weightsmith.names import check_name
from weightsmith.service.context import SCOPES, Actor, Context
from weightsmith.service.verbs import verb
from weightsmith.workspace.models import ApiToken, AuditEntry, Project, utcnow

TOKEN_PREFIX = "wsk_"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") + "Z" if value else None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# -- tokens -------------------------------------------------------------------------------------
class CreateToken(BaseModel):
    project: str = Field(description="the project the token belongs to (created if new)")
    name: str = Field(description="a name to tell tokens apart, e.g. 'ci' or 'planner-agent'")
    scopes: list[str] = Field(description=f"any of {', '.join(SCOPES)}")


class TokenInfo(BaseModel):
    id: int
    project: str
    name: str
    prefix: str = Field(description="the token's first characters, to recognise it")
    scopes: list[str]
    created_by: str
    created_at: str
    last_used_at: str | None = None
    revoked_at: str | None = None


class CreatedToken(TokenInfo):
    token: str = Field(description="the secret: shown this once, stored only as its sha256")


def _token_info(row: ApiToken, project: str) -> dict:
    return {
        "id": row.id, "project": project, "name": row.name, "prefix": row.prefix, "scopes": list(row.scopes),
        "created_by": row.created_by, "created_at": _iso(row.created_at), "last_used_at": _iso(row.last_used_at),
        "revoked_at": _iso(row.revoked_at),
    }


@verb("tokens.create", scope="admin", mutating=True, replayable=False,
      target=lambda req, res: f"token {res.name} ({res.project})")
def create_token(ctx: Context, req: CreateToken) -> CreatedToken:
    """Create a bearer token for a project; the secret is in the result, once, and never again.

    Raises:
        UserError: an unknown scope or a bad project or token name.
    """
    check_name(req.project, "project")
    check_name(req.name, "token")
    unknown = [s for s in req.scopes if s not in SCOPES]
    if unknown or not req.scopes:
        raise UserError(f"scopes: '{', '.join(unknown) or '(none)'}' — a token needs one or more of {', '.join(SCOPES)}.")
    if ctx.actor.kind == "token" and req.project != ctx.actor.project:
        raise NotFound(f"no project '{req.project}'.")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    ws = ctx.workspace.for_project(req.project)
    with ws.session() as s:
        row = ApiToken(
            project_id=ws.project_id, name=req.name, token_hash=hash_token(secret), prefix=secret[:10],
            scopes=sorted(set(req.scopes)), created_by=ctx.actor.name,
        )
        s.add(row)
        s.flush()
        return CreatedToken(token=secret, **_token_info(row, req.project))


class ListTokens(BaseModel):
    project: str | None = Field(None, description="only this project's tokens (default: every project the caller sees)")


class TokenList(BaseModel):
    tokens: list[TokenInfo]


@verb("tokens.list", scope="admin")
def list_tokens(ctx: Context, req: ListTokens) -> TokenList:
    """List tokens (never their secrets): name, prefix, scopes, when created, last used and revoked."""
    project = ctx.actor.project if ctx.actor.kind == "token" else req.project
    with ctx.workspace.session() as s:
        query = select(ApiToken, Project.name).join(Project, Project.id == ApiToken.project_id).order_by(ApiToken.id)
        if project:
            query = query.where(Project.name == project)
        return TokenList(tokens=[TokenInfo(**_token_info(row, name)) for row, name in s.execute(query)])


class RevokeToken(BaseModel):
    id: int = Field(ge=1, le=2**63 - 1, description="the token's id (from tokens.list)")


@verb("tokens.revoke", scope="admin", mutating=True, target=lambda req, res: f"token {req.id}")
def revoke_token(ctx: Context, req: RevokeToken) -> TokenInfo:
    """Revoke a token: every later call with it is refused (401). Revoking twice is harmless."""
    with ctx.workspace.session() as s:
        found = s.execute(
            select(ApiToken, Project.name).join(Project, Project.id == ApiToken.project_id).where(ApiToken.id == req.id)
        ).first()
        if found is None or (ctx.actor.kind == "token" and found[1] != ctx.actor.project):
            raise NotFound(f"no token {req.id}; 'weightsmith tokens list' shows them.")
        row, project = found
        row.revoked_at = row.revoked_at or utcnow()
        return TokenInfo(**_token_info(row, project))


def authenticate(ctx_workspace, bearer: str | None) -> Actor:
    """The actor a bearer token stands for.

    Raises:
        Unauthorized: no token, an unknown one, or a revoked one.
    """
    if not bearer:
        raise Unauthorized("this call needs 'Authorization: Bearer TOKEN'; create one with 'weightsmith tokens create'.")
    digest = hash_token(bearer)
    with ctx_workspace.session() as s:
        found = s.execute(
            select(ApiToken, Project.name).join(Project, Project.id == ApiToken.project_id).where(ApiToken.token_hash == digest)
        ).first()
        if found is None or not hmac.compare_digest(found[0].token_hash, digest):
            raise Unauthorized("the bearer token is not valid; check it, or create one with 'weightsmith tokens create'.")
        row, project = found
        if row.revoked_at is not None:
            raise Unauthorized(f"token '{row.name}' was revoked; ask an admin for a new one.")
        row.last_used_at = utcnow()
        return Actor(name=row.name, kind="token", project=project, scopes=frozenset(row.scopes), token_id=row.id, remote=True)


# -- audit ---------------------------------------------------------------------------------------
class ListAudit(BaseModel):
    limit: int = Field(100, ge=1, le=10_000, description="the newest N entries")
    verb: str | None = Field(None, description="only this verb, e.g. models.promote")


class AuditRow(BaseModel):
    id: int
    at: str
    actor: str
    actor_kind: str
    adapter: str
    verb: str
    target: str | None
    request_digest: str
    outcome: str
    detail: str | None


class AuditList(BaseModel):
    entries: list[AuditRow]


@verb("audit.list", scope="admin")
def list_audit(ctx: Context, req: ListAudit) -> AuditList:
    """The project's audit log, newest first: every mutating call from any adapter and how it ended."""
    ws = ctx.workspace
    with ws.session() as s:
        query = select(AuditEntry).where(AuditEntry.project_id == ws.project_id)
        if req.verb:
            query = query.where(AuditEntry.verb == req.verb)
        rows = s.scalars(query.order_by(AuditEntry.id.desc()).limit(req.limit)).all()
        return AuditList(entries=[
            AuditRow(id=r.id, at=_iso(r.created_at), actor=r.actor, actor_kind=r.actor_kind, adapter=r.adapter,
                     verb=r.verb, target=r.target, request_digest=r.request_digest, outcome=r.outcome, detail=r.detail)
            for r in rows
        ])
