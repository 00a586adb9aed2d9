"""Model registry verbs: list, show (with lineage), aliases, promote, rollback.

Versions are immutable; an alias (``champion``, ``candidate``, ...) moves only by ``models.promote``,
which needs a passing gate of the version against the alias's current holder unless forced with a
reason, and every move is kept with who made it and why.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from weightsmith.service.context import Context
from weightsmith.service.verbs import verb
from weightsmith.workspace import aliases, registry


class ModelVersionInfo(BaseModel):
    """One immutable model version: a folder ``from_pretrained`` opens, with lineage."""

    model_config = ConfigDict(extra="allow")
    id: int
    name: str
    version: int
    ref: str = Field(description="NAME@vN")
    stage: str = Field(description="the recipe that made it (tokenizer, pretrain, sft, ...)")
    hash: str
    parent: str | None = Field(description="the version it was trained from")
    run: int | None
    job: int | None
    data: list[str] = Field(description="the dataset versions it was trained on")
    source: str | None
    created_at: str


class ModelVersionDetail(ModelVersionInfo):
    lineage: list[dict[str, Any]] = Field([], description="this version, its parent, and so on back to the first")
    aliases: list[str] = []
    resolved_from: str | None = Field(None, description="the alias ref the request named, when it named one")


class ListModels(BaseModel):
    pass


class ModelList(BaseModel):
    versions: list[ModelVersionInfo]


@verb("models.list", scope="read")
def list_models(ctx: Context, req: ListModels) -> ModelList:
    """Every version of every model in the project."""
    return ModelList(versions=[ModelVersionInfo(**ctx.public(v)) for v in registry.list_versions(ctx.workspace)])


class ModelRef(BaseModel):
    ref: str = Field(description="NAME (newest), NAME@vN or NAME@ALIAS (e.g. quill@champion)")


@verb("models.show", scope="read")
def show_model(ctx: Context, req: ModelRef) -> ModelVersionDetail:
    """One version with its lineage (parent chain, datasets, run config) and the aliases that point at it."""
    return ModelVersionDetail(**ctx.public(registry.show_version(ctx.workspace, req.ref)))


class AliasesOf(BaseModel):
    name: str = Field(description="the model's name")


class AliasMoveInfo(BaseModel):
    move: int
    action: str
    from_: str | None = Field(alias="from")
    to: str
    gate: int | None
    forced: bool
    actor: str
    reason: str | None
    at: str
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class AliasInfo(BaseModel):
    alias: str
    version: str | None
    suite: str | None
    updated_at: str
    moves: list[AliasMoveInfo]


class ModelAliases(BaseModel):
    model: str
    aliases: list[AliasInfo]


@verb("models.aliases", scope="read")
def list_aliases(ctx: Context, req: AliasesOf) -> ModelAliases:
    """A model's aliases, each with its holder and every move (who, why, which gate, forced or not)."""
    return ModelAliases(**aliases.list_aliases(ctx.workspace, req.name))


class Promote(BaseModel):
    ref: str = Field(description="the version to promote, NAME@vN")
    alias: str = Field(description="the alias to move, e.g. champion")
    force: bool = Field(False, description="move it without a passing gate (needs reason; recorded as forced)")
    reason: str | None = Field(None, description="why; kept with the move")


class AliasMoved(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    alias: str
    version: str = Field(description="the holder now, NAME@vN")
    previous: str | None
    moved: bool = Field(True, description="false when the alias already pointed at the version")
    forced: bool = False
    gate: int | None = None
    actor: str
    reason: str | None
    move: int | None


@verb("models.promote", scope="promote", mutating=True, target=lambda req, res: f"{req.ref} -> {req.alias}")
def promote(ctx: Context, req: Promote) -> AliasMoved:
    """Point an alias at a version, if a gate passed it against the alias's current holder (or forced, with a reason).

    Raises:
        UserError: no qualifying gate (the message names the gate to run) and not forced.
    """
    return AliasMoved(**aliases.promote(ctx.workspace, req.ref, req.alias, force=req.force, reason=req.reason,
                                        actor=ctx.actor.name))


class Rollback(BaseModel):
    name: str = Field(description="the model's name")
    alias: str = Field(description="the alias to move back")
    reason: str | None = None


@verb("models.rollback", scope="promote", mutating=True, target=lambda req, res: f"{req.name}@{req.alias}")
def rollback(ctx: Context, req: Rollback) -> AliasMoved:
    """Move an alias back to the version that held it before its latest promotion still in effect."""
    return AliasMoved(**aliases.rollback(ctx.workspace, req.name, req.alias, reason=req.reason, actor=ctx.actor.name))
