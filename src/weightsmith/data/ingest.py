"""Dataset verbs: add (validate → version by content hash), list, show, resolve."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from weightsmith.data.formats import FORMATS, Validated, approx_tokens, canonical_jsonl, validate
from weightsmith.errors import NotFound, UserError, clip, closest, shorten
from weightsmith.names import check_name
from weightsmith.workspace import Workspace
from weightsmith.workspace.models import Dataset, DatasetVersion


class InvalidData(UserError):
    """A file with errors: every bad line is listed, and no version is created."""

    def __init__(self, errors: list[str], path: Path):
        self.errors = errors
        super().__init__(f"{path}: {len(errors)} problem(s) found; no dataset version was created.")


def dataset_version_dict(dv: DatasetVersion, *, created: bool | None = None) -> dict[str, Any]:
    out = {
        "id": dv.id,
        "name": dv.dataset.name,
        "version": dv.version,
        "ref": f"{dv.dataset.name}@v{dv.version}",
        "format": dv.format,
        "rows": dv.rows,
        "tokens_estimate": dv.tokens,  # counted without a tokenizer: see formats.approx_tokens
        "duplicates": dv.duplicates,
        "hash": dv.hash,
        "path": dv.path,
        "provenance": dv.provenance,
        "created_at": dv.created_at.isoformat(timespec="seconds") + "Z",
    }
    if created is not None:
        out["created"] = created
    return out


def add_dataset(
    ws: Workspace,
    name: str,
    path: str | Path,
    fmt: str,
    provenance: dict[str, Any] | None = None,
    *,
    max_chars: int | None = None,
) -> dict[str, Any]:
    """Validate ``path`` as ``fmt`` and store it as a new version of dataset ``name``.

    Re-adding identical (normalized) content returns the existing version. A file with any
    error raises :class:`InvalidData` (exit 2) before anything is written. ``max_chars`` is the
    most characters one chat/preference/prompt row may hold (default
    :data:`weightsmith.data.formats.DEFAULT_MAX_CHARS`; text documents are not capped).
    """
    check_name(name, "dataset")
    if fmt not in FORMATS:
        raise UserError(f"unknown format {shorten(fmt)}{closest(fmt, FORMATS)}; use one of {', '.join(FORMATS)}.")
    path = Path(path)
    result = validate(path, fmt, max_chars=max_chars)
    if not result.ok():
        raise InvalidData(result.errors, path)
    return store_validated(ws, name, path, result, provenance)


def store_validated(
    ws: Workspace, name: str, path: Path, result: Validated, provenance: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Version an already-validated file (see :func:`add_dataset`).

    Race-safe: concurrent calls with the same content get the same version (one ``created``, the
    others not), never a database error.
    """
    check_name(name, "dataset")
    fmt = result.format
    data = canonical_jsonl(result.rows)
    with ws.session() as s:  # refuse a format change before storing any bytes
        _check_format(s.scalar(select(Dataset).where(Dataset.project_id == ws.project_id, Dataset.name == name)), fmt)
    digest, stored = ws.store.put_bytes(data, suffix=".jsonl")
    project_id = ws.project_id

    def get_or_add(s) -> dict[str, Any]:
        dataset = s.scalar(select(Dataset).where(Dataset.project_id == project_id, Dataset.name == name))
        _check_format(dataset, fmt)  # again: a concurrent caller may have created it meanwhile
        if dataset is None:
            dataset = Dataset(project_id=project_id, name=name, format=fmt)
            s.add(dataset)
            s.flush()
        existing = s.scalar(
            select(DatasetVersion).where(DatasetVersion.dataset_id == dataset.id, DatasetVersion.hash == digest)
        )
        if existing is not None:
            return dataset_version_dict(existing, created=False)
        last = max((v.version for v in dataset.versions), default=0)
        dv = DatasetVersion(
            dataset=dataset,
            version=last + 1,
            hash=digest,
            format=fmt,
            rows=len(result.rows),
            tokens=approx_tokens(result.rows, fmt),
            duplicates=result.duplicates,
            path=str(stored),
            provenance={"source": str(path.resolve()), "files": result.sources, **(provenance or {})},
        )
        s.add(dv)
        s.flush()
        return dataset_version_dict(dv, created=True)

    return ws.transact(get_or_add)


def _check_format(dataset: Dataset | None, fmt: str) -> None:
    if dataset is not None and dataset.format != fmt:
        raise UserError(f"dataset '{dataset.name}' holds {dataset.format} data; add {fmt} data under another name.")


def list_datasets(ws: Workspace) -> list[dict[str, Any]]:
    with ws.session() as s:
        rows = s.scalars(
            select(DatasetVersion)
            .join(Dataset)
            .where(Dataset.project_id == ws.project_id)
            .order_by(Dataset.name, DatasetVersion.version)
        ).all()
        return [dataset_version_dict(dv) for dv in rows]


def resolve_dataset(ws: Workspace, ref: str) -> dict[str, Any]:
    """``name`` (newest version) or ``name@vN`` → that version's summary, or a UserError."""
    name, _, ver = ref.partition("@")
    with ws.session() as s:
        dataset = s.scalar(select(Dataset).where(Dataset.project_id == ws.project_id, Dataset.name == name))
        if dataset is None or not dataset.versions:
            known = s.scalars(select(Dataset.name).where(Dataset.project_id == ws.project_id)).all()
            raise NotFound(
                f"no dataset named {shorten(name)}{closest(name, known)}; add it with "
                f"'weightsmith data add {name} PATH --format FORMAT'."
            )
        if not ver:
            return dataset_version_dict(dataset.versions[-1])
        number = _version_number(ver, ref)
        for dv in dataset.versions:
            if dv.version == number:
                return dataset_version_dict(dv)
        raise NotFound(
            f"dataset {shorten(name)} has no version {clip(ver)}; it has v1..v{dataset.versions[-1].version}."
        )


def _version_number(ver: str, ref: str) -> int:
    text = ver[1:] if ver.startswith("v") else ver
    if not text.isdigit():
        raise UserError(f"{shorten(ref)}: a version is written vN (e.g. {clip(ref.partition('@')[0])}@v2).")
    return int(text)


_check_name = check_name  # the shared rule now lives in weightsmith.names; kept for existing importers
