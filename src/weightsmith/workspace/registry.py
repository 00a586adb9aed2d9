"""Model registry verbs: register a version with lineage, list, show, resolve a reference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import select

from weightsmith.errors import NotFound, UserError, clip, closest, shorten
from weightsmith.names import check_name
from weightsmith.workspace import Workspace
from weightsmith.workspace.models import (
    DatasetVersion,
    Model,
    ModelVersion,
    ModelVersionData,
    Run,
)


def is_model_dir(path: Path) -> bool:
    """A directory ``from_pretrained`` can open: a config.json naming a model type, and weights."""
    config = path / "config.json"
    if not config.is_file():
        return False
    try:
        if "model_type" not in json.loads(config.read_text()):
            return False
    except (OSError, ValueError):
        return False
    return any(path.glob("*.safetensors")) or (path / "model.safetensors.index.json").exists()


def register_version(
    ws: Workspace,
    name: str,
    src_dir: Path,
    *,
    stage: str,
    parent_id: int | None = None,
    run_id: int | None = None,
    dataset_version_ids: list[int] = (),
    source: str | None = None,
    move: bool = False,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Store ``src_dir`` in the artifact store and record it as the next version of ``name``.

    Race-safe: concurrent registrations of one model get consecutive versions, never a database
    error. Raises UserError when ``name`` breaks the name rule (:mod:`weightsmith.names`).
    """
    check_name(name, "model")
    digest, stored = ws.store.put_tree(Path(src_dir), move=move)
    project_id = ws.project_id

    def add_version(s) -> dict[str, Any]:
        model = s.scalar(select(Model).where(Model.project_id == project_id, Model.name == name))
        if model is None:
            model = Model(project_id=project_id, name=name)
            s.add(model)
            s.flush()
        mv = ModelVersion(
            model=model,
            version=max((v.version for v in model.versions), default=0) + 1,
            stage=stage,
            path=str(stored),
            hash=digest,
            parent_id=parent_id,
            run_id=run_id,
            source=source,
            meta=meta or {},
        )
        s.add(mv)
        s.flush()
        for dv_id in dict.fromkeys(dataset_version_ids):
            s.add(ModelVersionData(model_version_id=mv.id, dataset_version_id=dv_id))
        s.flush()
        return version_dict(s, mv)

    return ws.transact(add_version)


def _trained_on(s, model_version_id: int) -> list[str]:
    """The dataset versions (``name@vN``) a model version was trained on."""
    rows = s.scalars(
        select(DatasetVersion)
        .join(ModelVersionData, ModelVersionData.dataset_version_id == DatasetVersion.id)
        .where(ModelVersionData.model_version_id == model_version_id)
    ).all()
    return [f"{dv.dataset.name}@v{dv.version}" for dv in rows]


def version_dict(s, mv: ModelVersion, *, lineage: bool = False) -> dict[str, Any]:
    parent = s.get(ModelVersion, mv.parent_id) if mv.parent_id else None
    data = _trained_on(s, mv.id)
    out: dict[str, Any] = {
        "id": mv.id,
        "name": mv.model.name,
        "version": mv.version,
        "ref": f"{mv.model.name}@v{mv.version}",
        "stage": mv.stage,
        # The pipeline stage's own name (sft_lora, sft_full: variants of one recipe), kept since registration.
        "pipeline_stage": (mv.meta or {}).get("pipeline_stage"),
        "path": mv.path,
        "hash": mv.hash,
        "parent": f"{parent.model.name}@v{parent.version}" if parent else None,
        "run": mv.run_id,
        "job": s.get(Run, mv.run_id).job_id if mv.run_id else None,
        "data": data,
        # A data mix's sampling weight per dataset version of data (absent for one dataset).
        "data_weights": (mv.meta or {}).get("data_weights"),
        "source": mv.source,
        "created_at": mv.created_at.isoformat(timespec="seconds") + "Z",
    }
    if lineage:
        chain = []
        node = mv
        while node is not None:
            run = s.get(Run, node.run_id) if node.run_id else None
            chain.append(
                {
                    "ref": f"{node.model.name}@v{node.version}",
                    "stage": node.stage,
                    "run": node.run_id,
                    "data": _trained_on(s, node.id),
                    "data_weights": (node.meta or {}).get("data_weights"),
                    "config": run.config.get("config", {}) if run else {},
                    "source": node.source,
                }
            )
            node = s.get(ModelVersion, node.parent_id) if node.parent_id else None
        out["lineage"] = chain
    return out


def list_versions(ws: Workspace) -> list[dict[str, Any]]:
    with ws.session() as s:
        rows = s.scalars(
            select(ModelVersion).join(Model).where(Model.project_id == ws.project_id).order_by(Model.name, ModelVersion.version)
        ).all()
        return [version_dict(s, mv) for mv in rows]


def _find_version(s, ws: Workspace, ref: str) -> ModelVersion:
    name, _, ver = ref.partition("@")
    model = s.scalar(select(Model).where(Model.project_id == ws.project_id, Model.name == name))
    if model is None or not model.versions:
        known = s.scalars(select(Model.name).where(Model.project_id == ws.project_id)).all()
        raise NotFound(f"no model named {shorten(name)}{closest(name, known)}; 'weightsmith models list' shows them.")
    if not ver or ver == "latest":
        return model.versions[-1]
    text = ver[1:] if ver.startswith("v") else ver
    if not text.isdigit():
        # NAME@ALIAS (e.g. quill@champion): aliases live in weightsmith.workspace.aliases.
        from weightsmith.workspace.aliases import alias_names, alias_target

        target = alias_target(s, model, ver)
        if target is not None:
            return target
        known = alias_names(s, model)
        raise NotFound(
            f"model {shorten(name)} has no alias {shorten(ver)}{closest(ver, known)}"
            f"{' (aliases: ' + ', '.join(known) + ')' if known else ''}; name a version as {name}@vN (e.g. {name}@v1)."
        )
    for mv in model.versions:
        if mv.version == int(text):
            return mv
    raise NotFound(f"model {shorten(name)} has no version v{clip(text)}; it has v1..v{model.versions[-1].version}.")


def find_version(s, ws: Workspace, ref: str) -> ModelVersion:
    """The version ``NAME``, ``NAME@latest``, ``NAME@vN`` or ``NAME@ALIAS`` names, in session ``s``."""
    return _find_version(s, ws, ref)


def lookup_version(s, ws: Workspace, ref: str) -> ModelVersion | None:
    """The version ``ref`` names (as :func:`find_version`), in one SQL query over unique indexes, or None.

    For the serving path, which resolves a name on every request: ``models (project_id, name)``, then
    ``model_versions (model_id, version)`` or ``model_aliases (model_id, name)`` and the version's primary key,
    in one statement, with the model loaded alongside (``mv.model`` costs no second query). The alias is read
    now, so a promotion reaches the next call. None when ``ref`` names nothing; :func:`find_version` then says
    why in a sentence (that path may read more).
    """
    from sqlalchemy.orm import contains_eager

    from weightsmith.workspace.models import ModelAlias

    name, _, tag = ref.partition("@")
    query = (select(ModelVersion).join(ModelVersion.model).options(contains_eager(ModelVersion.model))
             .where(Model.project_id == ws.project_id, Model.name == name))
    number = tag[1:] if tag.startswith("v") else tag
    if not tag or tag == "latest":
        query = query.order_by(ModelVersion.version.desc()).limit(1)
    elif number.isdigit():
        query = query.where(ModelVersion.version == int(number))
    else:
        query = query.join(ModelAlias, (ModelAlias.model_id == Model.id) & (ModelAlias.name == tag)
                           & (ModelAlias.model_version_id == ModelVersion.id))
    return s.scalars(query).first()


def show_version(ws: Workspace, ref: str) -> dict[str, Any]:
    """One version with its lineage; ``ref`` may name an alias (``ref`` in the result is always NAME@vN)."""
    from weightsmith.workspace.aliases import aliases_of

    with ws.session() as s:
        mv = _find_version(s, ws, ref)
        out = version_dict(s, mv, lineage=True)
        out["aliases"] = aliases_of(s, mv)
        tag = ref.partition("@")[2]
        if tag in out["aliases"]:
            out["resolved_from"] = ref
        return out


def resolve_model(ws: Workspace, ref: str) -> dict[str, Any]:
    """``NAME``, ``NAME@vN``, ``NAME@ALIAS`` or a local HF model directory → {"path", "id"|None, "ref"}."""
    path = Path(ref).expanduser()
    if "@" not in ref and (path.is_dir() or "/" in ref or ref.startswith(".")):
        if not path.is_dir():
            raise UserError(f"model path {shorten(ref, 300)} does not exist.")
        if not is_model_dir(path):
            raise UserError(
                f"{shorten(ref, 300)} is not a model directory (it needs a config.json with a model_type and "
                "*.safetensors weights, as save_pretrained writes)."
            )
        return {"path": str(path.resolve()), "id": None, "ref": str(path.resolve())}
    with ws.session() as s:
        mv = _find_version(s, ws, ref)
        return {"path": mv.path, "id": mv.id, "ref": f"{mv.model.name}@v{mv.version}"}
