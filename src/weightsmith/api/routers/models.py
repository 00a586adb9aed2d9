"""``/v1/models``: list, show (lineage), aliases, promote, rollback."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from weightsmith.api.app import Ctx, IdempotencyKey
from weightsmith.service import models
from weightsmith.service.models import AliasesOf, AliasMoved, ModelAliases, ModelList, ModelRef, ModelVersionDetail, Promote, Rollback

router = APIRouter(tags=["models"])


@router.get("/models", response_model=ModelList)
def list_models(ctx: Ctx) -> ModelList:
    """Every version of every model in the project."""
    return models.list_models(ctx, {})


@router.get("/models/{ref}", response_model=ModelVersionDetail)
def show_model(ref: str, ctx: Ctx) -> ModelVersionDetail:
    """A version (NAME, NAME@vN or NAME@ALIAS) with its lineage and aliases."""
    return models.show_model(ctx, ModelRef(ref=ref))


@router.get("/models/{name}/aliases", response_model=ModelAliases)
def list_aliases(name: str, ctx: Ctx) -> ModelAliases:
    """A model's aliases and every move of them."""
    return models.list_aliases(ctx, AliasesOf(name=name))


class PromoteBody(BaseModel):
    alias: str = Field(description="the alias to move, e.g. champion")
    force: bool = False
    reason: str | None = None


@router.post("/models/{ref}/promote", response_model=AliasMoved)
def promote(ref: str, body: PromoteBody, ctx: Ctx, key: IdempotencyKey = None) -> AliasMoved:
    """Move an alias to this version; refused (422) unless a passing gate allows it or it is forced with a reason."""
    return models.promote(ctx, {"ref": ref, **body.model_dump()}, idempotency_key=key)


class RollbackBody(BaseModel):
    alias: str
    reason: str | None = None


@router.post("/models/{name}/rollback", response_model=AliasMoved)
def rollback(name: str, body: RollbackBody, ctx: Ctx, key: IdempotencyKey = None) -> AliasMoved:
    """Move an alias back to its previous holder."""
    return models.rollback(ctx, {"name": name, **body.model_dump()}, idempotency_key=key)
