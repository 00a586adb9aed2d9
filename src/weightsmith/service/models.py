"""Model registry verbs: list, show (with lineage), aliases, promote, rollback, export (GGUF).

Versions are immutable; an alias (``champion``, ``candidate``, ...) moves only by ``models.promote``,
which needs a passing gate of the version against the alias's current holder unless forced with a
reason, and every move is kept with who made it and why.
"""

from __future__ import annotations

from typing import Any, Literal

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
    pipeline_stage: str | None = Field(None, description="the name of the pipeline stage that made it (e.g. sft_lora)")
    hash: str
    parent: str | None = Field(description="the version it was trained from")
    run: int | None
    job: int | None
    data: list[str] = Field(description="the dataset versions it was trained on")
    data_weights: dict[str, float] | None = Field(
        None, description="for a data mix, the sampling weight of each dataset version in data (null for one dataset)")
    source: str | None = Field(description="what it started from when no registered parent says it: a model "
                               "folder, or 'init: random (size S)'")
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


class ExportModel(BaseModel):
    ref: str = Field(description="the version to export: NAME, NAME@vN or NAME@ALIAS")
    format: Literal["gguf"] = Field("gguf", description="gguf: one file for llama.cpp and Ollama")
    outtype: Literal["f16", "q8_0", "f32"] = Field(
        "f16", description="how the weight matrices are stored: f16 (half of f32), q8_0 (8-bit, ~0.53 of f16), "
        "f32 (exact); norms stay f32")
    output: str | None = Field(None, description="the file to write, on this machine (default: NAME-vN-OUTTYPE.gguf "
                               "in the current folder)")
    force: bool = Field(False, description="replace the output file if it exists")


class ModelExported(BaseModel):
    ref: str = Field(description="the version exported, NAME@vN")
    format: str
    outtype: str
    path: str = Field(description="the file written")
    bytes: int
    sha256: str = Field(description="of the file written")
    tensors: int
    parameters: int
    context_length: int = Field(description="the longest context the model was built for (llama.context_length)")
    eos_token_id: int | None = Field(description="EOS, also written as the end-of-turn token: where generation stops")
    chat_template: bool = Field(description="whether the tokenizer's chat template is embedded")
    metadata: dict[str, Any] = Field(description="the lineage keys written (general.*, weightsmith.*)")


@verb("models.export", scope="read", mutating=True, local_only=True,
      target=lambda req, res: f"{res.ref} -> {res.path}" if res else req.ref)
def export_model(ctx: Context, req: ExportModel) -> ModelExported:
    """Write a model version as one GGUF file for llama.cpp and Ollama, with its chat template, stop token and lineage.

    Written with llama.cpp's ``gguf`` package (see :mod:`weightsmith.export.gguf`); Llama-architecture
    versions only. The call writes a file on this machine and takes minutes for a large model, so it
    is the CLI's (``weightsmith models export``), never a remote client's; it is audited.

    Raises:
        Forbidden: a remote caller (it would name a path on the server).
        NotFound: no such version.
        UserError: not a Llama model, a tokenizer llama.cpp would split differently, or an output that exists.
    """
    from pathlib import Path

    from weightsmith.errors import Forbidden
    from weightsmith.export.gguf import Lineage, default_filename, export_gguf

    if ctx.actor.remote:
        raise Forbidden("models.export writes a file on the server; run 'weightsmith models export' on that machine.")
    found = registry.show_version(ctx.workspace, req.ref)
    output = Path(req.output).expanduser() if req.output else Path.cwd() / default_filename(
        found["name"], found["version"], req.outtype)
    lineage = Lineage(ref=found["ref"], name=found["name"], version=found["version"], hash=found["hash"],
                      parent=found["parent"], datasets=list(found["data"]), stage=found["stage"],
                      source=found["source"], run=found["run"], created_at=found["created_at"])
    ctx.emit("export_started", ref=found["ref"], output=str(output), outtype=req.outtype)
    done = export_gguf(Path(found["path"]), output, outtype=req.outtype, lineage=lineage, overwrite=req.force)
    return ModelExported(ref=found["ref"], format=req.format, outtype=done.outtype, path=str(done.path.resolve()),
                         bytes=done.bytes, sha256=done.sha256, tensors=done.tensors, parameters=done.parameters,
                         context_length=done.context_length, eos_token_id=done.eos_token_id,
                         chat_template=done.chat_template, metadata=done.metadata)
