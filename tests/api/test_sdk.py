"""The Python SDK end to end against a real server: the same verbs, result models and typed errors."""

from __future__ import annotations

import pytest

from weightsmith import Client
from weightsmith.errors import Conflict, Forbidden, NotFound, Unauthorized, UserError
from weightsmith.service.datasets import DatasetVersionInfo
from weightsmith.service.pipelines import PipelineSubmitted
from helpers import EXAMPLES
from service_helpers import tiny_spec


def test_sdk_uploads_submits_reads_and_raises_typed_errors(api, tmp_path):
    with Client(api.url, api.tokens["trainer"]) as ws, Client(api.url, api.tokens["rival"]) as rival:
        docs = ws.datasets.add("docs", "text", path=EXAMPLES / "tiny" / "data" / "docs")
        assert isinstance(docs, DatasetVersionInfo) and docs.ref == "docs@v1" and docs.rows == 8 and docs.created
        assert ws.datasets.add("docs", "text", path=EXAMPLES / "tiny" / "data" / "docs").created is False

        bad = tmp_path / "chats.jsonl"
        bad.write_text('{"messages": []}\n{"messages": [{"role": "user", "content": "hi"}]}\n')
        with pytest.raises(UserError) as refused:
            ws.datasets.add("chats", "chat", path=bad)
        assert [e.split(":")[1] for e in refused.value.errors] == ["1", "2"] and refused.value.errors[0].startswith("chats.jsonl:1:")

        pipeline = tmp_path / "tiny.yaml"
        import yaml

        pipeline.write_text(yaml.safe_dump(tiny_spec()))
        run = ws.pipelines.submit(path=pipeline, overrides=["pretrain.max_steps=3"], idempotency_key="sdk-1")
        assert isinstance(run, PipelineSubmitted) and [j.stage for j in run.jobs] == ["tokenizer", "pretrain"]
        assert ws.pipelines.submit(path=pipeline, overrides=["pretrain.max_steps=3"], idempotency_key="sdk-1").replayed
        with pytest.raises(UserError, match="already used for a different"):
            ws.pipelines.submit(path=pipeline, idempotency_key="sdk-1")
        assert ws.jobs.show(run.jobs[1].id).payload["config"]["max_steps"] == 3
        assert ws.pipelines.cancel(run.pipeline).state == "cancelled"
        assert ws.jobs.retry(run.jobs[0].id).state == "queued"

        with pytest.raises(NotFound):
            rival.jobs.show(run.jobs[0].id)
        with pytest.raises(NotFound):
            rival.datasets.show("docs")
        assert rival.models.list().versions == []
        with pytest.raises(Forbidden):
            ws.models.promote("tiny@v1", "champion", force=True, reason="no scope")
        with pytest.raises(Forbidden):
            ws.tokens.list()
    with Client(api.url, "wsk_forged") as forged, pytest.raises(Unauthorized):
        forged.jobs.list()
    assert issubclass(Conflict, UserError)
