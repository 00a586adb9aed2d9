"""``/v1/datasets``: upload (JSON, multipart or a raw JSONL body), list, show."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from weightsmith.api.app import Ctx, IdempotencyKey
from weightsmith.errors import UserError
from weightsmith.service import datasets
from weightsmith.service.verbs import check_scope
from weightsmith.service.datasets import MAX_UPLOAD_BYTES, AddDataset, DatasetList, DatasetVersionInfo, ShowDataset

router = APIRouter(tags=["datasets"])
RAW_TYPES = ("application/x-ndjson", "application/jsonl", "application/jsonlines", "text/plain", "text/markdown")

_UPLOAD_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": AddDataset.model_json_schema(ref_template="#/components/schemas/{model}")},
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["name", "format", "file"],
                "properties": {"name": {"type": "string"}, "format": {"type": "string"},
                               "max_chars": {"type": "integer", "minimum": 1},
                               "file": {"type": "string", "format": "binary"}},
            }},
            "application/x-ndjson": {"schema": {"type": "string"}},
        },
    },
    "parameters": [
        {"name": "name", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "with a raw JSONL body: the dataset's name"},
        {"name": "format", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "with a raw JSONL body: text | chat | preference | prompt"},
    ],
}


async def _upload_request(request: Request) -> AddDataset | dict:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise UserError("multipart upload: a 'file' part with the data is required.")
        data = await upload.read()
        raw = {k: form.get(k) for k in ("name", "format", "max_chars") if form.get(k) is not None}
        return {**raw, "content": _text(data), "filename": upload.filename or "upload.jsonl"}
    body = await request.body()
    if kind in RAW_TYPES:
        query = request.query_params
        raw = {k: query.get(k) for k in ("name", "format", "max_chars", "filename") if query.get(k) is not None}
        return {**raw, "content": _text(body)}
    try:
        parsed = json.loads(body or b"null")
    except ValueError as exc:
        raise UserError(f"the body is not JSON ({exc}); send JSON, multipart/form-data, or JSONL as application/x-ndjson.") from None
    if not isinstance(parsed, dict):
        raise UserError("the body must be a JSON object with name, format and content.")
    return parsed


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"the uploaded data is not UTF-8 text (byte {exc.start}).") from None


@router.post("/datasets", status_code=201, response_model=DatasetVersionInfo, openapi_extra=_UPLOAD_DOC,
             responses={200: {"description": "identical content: the existing version", "model": DatasetVersionInfo}})
async def add_dataset(request: Request, ctx: Ctx, key: IdempotencyKey = None):
    """Validate the upload and store it as the dataset's next version (identical content: the existing one, 200).

    A body with bad lines is a 422 whose ``details`` list every bad line by number; nothing is created.
    """
    from starlette.concurrency import run_in_threadpool

    check_scope(ctx, "datasets.add")  # before reading a body that may be large
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES + (1 << 20):
        raise UserError(f"the upload is {int(declared):,} bytes; at most {MAX_UPLOAD_BYTES:,} may be sent at once.")
    req = await _upload_request(request)
    result = await run_in_threadpool(datasets.add_dataset, ctx, req, idempotency_key=key)
    return JSONResponse(result.model_dump(mode="json"), status_code=201 if result.created else 200)


@router.get("/datasets", response_model=DatasetList)
def list_datasets(ctx: Ctx) -> DatasetList:
    """Every version of every dataset in the token's project."""
    return datasets.list_datasets(ctx, {})


@router.get("/datasets/{ref}", response_model=DatasetVersionInfo)
def show_dataset(ref: str, ctx: Ctx) -> DatasetVersionInfo:
    """One dataset version: NAME (newest) or NAME@vN."""
    return datasets.show_dataset(ctx, ShowDataset(ref=ref))
