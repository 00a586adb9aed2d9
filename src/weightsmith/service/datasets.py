"""Dataset verbs: add (a local file, or uploaded content), list, show.

Validation is the same for every adapter (:func:`weightsmith.data.formats.validate`): every bad line
by number, and nothing is created when any line is bad.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from weightsmith.data import ingest
from weightsmith.errors import UserError
from weightsmith.service.context import Context
from weightsmith.service.verbs import verb

MAX_UPLOAD_BYTES = 512 * 1024 * 1024


class DatasetVersionInfo(BaseModel):
    """One immutable dataset version."""

    model_config = ConfigDict(extra="allow")
    id: int
    name: str
    version: int
    ref: str = Field(description="NAME@vN, how stages and suites name it")
    format: str
    rows: int
    tokens_estimate: int = Field(description="tokens estimated without a tokenizer (see weightsmith.data.formats.approx_tokens)")
    duplicates: int
    hash: str = Field(description="sha256 of the normalized JSONL")
    provenance: dict[str, Any] = {}
    created_at: str
    created: bool | None = Field(None, description="add: false when identical content already had this version")


class AddDataset(BaseModel):
    """Add a dataset version from a local path (local callers only) or from uploaded content."""

    name: str = Field(description="the dataset's name: letters, digits, '_', '-', '.'")
    format: str = Field(description="text | chat | preference | prompt")
    path: str | None = Field(None, description="a file or folder on this machine (not allowed for remote callers)")
    content: str | None = Field(None, description="the file's text: JSONL, or for format text a .txt/.md document")
    filename: str = Field("upload.jsonl", description="the uploaded file's name; its suffix tells JSONL from a text document")
    max_chars: int | None = Field(None, gt=0, description="refuse chat/preference/prompt rows longer than this")

    @model_validator(mode="after")
    def _one_source(self) -> AddDataset:
        if (self.path is None) == (self.content is None):
            raise ValueError("give exactly one of 'path' (a local file) or 'content' (an upload)")
        return self


def _upload_suffix(filename: str) -> str:
    suffix = Path(filename).suffix.lower()
    return suffix if suffix in (".jsonl", ".json", ".txt", ".md") else ".jsonl"


@verb("datasets.add", scope="train", mutating=True, target=lambda req, res: res.ref if res else req.name)
def add_dataset(ctx: Context, req: AddDataset) -> DatasetVersionInfo:
    """Validate data and store it as the next version of a dataset (identical content: the same version).

    Every bad line is reported by number (``FILE:LINE: reason``) and nothing is created. Adding the
    same content again returns the existing version with ``created: false``.

    Raises:
        InvalidData (a UserError): the lines that are bad, in ``errors``.
    """
    kwargs: dict[str, Any] = {}
    if req.max_chars is not None:
        kwargs["max_chars"] = req.max_chars
    if req.path is not None:
        path = ctx.local_path(req.path, "path")
        return DatasetVersionInfo(**ctx.public(ingest.add_dataset(ctx.workspace, req.name, path, req.format, **kwargs)))
    data = req.content.encode("utf-8")
    if len(data) > MAX_UPLOAD_BYTES:
        raise UserError(f"content: {len(data):,} bytes is more than the {MAX_UPLOAD_BYTES:,} an upload may hold.")
    shown = Path(req.filename).name or "upload.jsonl"
    tmp_dir = ctx.workspace.dir / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix="upload-", suffix=_upload_suffix(shown))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        try:
            doc = ingest.add_dataset(ctx.workspace, req.name, tmp, req.format,
                                     provenance={"source": f"upload:{shown}", "files": [shown]}, **kwargs)
        except ingest.InvalidData as exc:  # name the upload, not the temporary file
            exc.errors = [e.replace(tmp, shown).replace(Path(tmp).name, shown) for e in exc.errors]
            raise ingest.InvalidData(exc.errors, Path(shown)) from None
        return DatasetVersionInfo(**ctx.public(doc))
    finally:
        Path(tmp).unlink(missing_ok=True)


class ListDatasets(BaseModel):
    pass


class DatasetList(BaseModel):
    versions: list[DatasetVersionInfo]


@verb("datasets.list", scope="read")
def list_datasets(ctx: Context, req: ListDatasets) -> DatasetList:
    """Every version of every dataset in the project, oldest first."""
    return DatasetList(versions=[DatasetVersionInfo(**ctx.public(d)) for d in ingest.list_datasets(ctx.workspace)])


class ShowDataset(BaseModel):
    ref: str = Field(description="NAME (newest version) or NAME@vN")


@verb("datasets.show", scope="read")
def show_dataset(ctx: Context, req: ShowDataset) -> DatasetVersionInfo:
    """One dataset version: rows, token estimate, hash, provenance."""
    return DatasetVersionInfo(**ctx.public(ingest.resolve_dataset(ctx.workspace, req.ref)))
