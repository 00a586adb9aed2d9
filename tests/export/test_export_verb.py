"""``models.export`` as the service verb and as ``weightsmith models export``: a registered version (named by
ref or alias) becomes a GGUF whose metadata carries the registry's lineage; the call is audited; a remote caller
is refused (it would name a path on the server) and no remote adapter offers it."""

from __future__ import annotations

import asyncio
import json

import pytest

from helpers import CLI, query_db
from serving_helpers import cli_main


@pytest.fixture
def registered(ws, export_models):
    """dispatch@v1 (pretrain on docs@v1) -> dispatch@v2 (sft, parent v1, on docs@v1), v2 the champion."""
    from weightsmith.service import Context, datasets
    from weightsmith.workspace.aliases import promote
    from weightsmith.workspace.registry import register_version

    ctx = Context.local(ws)
    docs = datasets.add_dataset(ctx, {"name": "docs", "format": "text", "filename": "docs.txt",
                                      "content": "\n".join(export_models.docs)})
    v1 = register_version(ws, "dispatch", export_models.chat, stage="pretrain", dataset_version_ids=[docs.id])
    v2 = register_version(ws, "dispatch", export_models.chat, stage="sft", parent_id=v1["id"],
                          dataset_version_ids=[docs.id])
    promote(ws, "dispatch@v2", "champion", force=True, reason="the tests' champion", actor="tests")
    return v2


def test_export_verb_writes_the_registry_lineage_and_is_audited(ws, registered, tmp_path):
    from gguf import GGUFReader

    from weightsmith.service import Context, models

    out = tmp_path / "champion.gguf"
    done = models.export_model(Context.local(ws), {"ref": "dispatch@champion", "outtype": "q8_0", "output": str(out)})
    assert (done.ref, done.format, done.outtype, done.path) == ("dispatch@v2", "gguf", "q8_0", str(out.resolve()))
    assert out.stat().st_size == done.bytes and done.chat_template and done.eos_token_id == 2
    fields = {name: f.contents() for name, f in GGUFReader(out).fields.items()}
    assert fields["general.name"] == "dispatch@v2" and fields["general.file_type"] == 7
    assert fields["weightsmith.ref"] == "dispatch@v2" and fields["weightsmith.hash"] == registered["hash"]
    assert fields["weightsmith.parent"] == "dispatch@v1" and fields["weightsmith.stage"] == "sft"
    assert fields["weightsmith.datasets"] == ["docs@v1"] and fields["general.dataset.0.name"] == "docs"
    assert fields["general.base_model.0.name"] == "dispatch" and fields["general.base_model.0.version"] == "v1"
    audit = query_db(ws.dir / "weightsmith.db",
                     "SELECT verb, outcome, target FROM audit_log WHERE verb = 'models.export'")
    assert audit == [("models.export", "ok", f"dispatch@v2 -> {out.resolve()}")]


def test_remote_callers_cannot_export_and_no_remote_adapter_offers_it(ws, registered, tmp_path):
    from weightsmith.errors import Forbidden
    from weightsmith.mcp.server import build_server
    from weightsmith.service import VERBS, Actor, Context, models

    token = Actor(name="reader", kind="token", project=ws.project_name, scopes=frozenset({"read"}), remote=True)
    with pytest.raises(Forbidden, match="writes a file on the server"):
        models.export_model(Context.for_actor(ws, token, adapter="api"), {"ref": "dispatch@v2",
                                                                         "output": str(tmp_path / "x.gguf")})
    assert not (tmp_path / "x.gguf").exists()
    assert VERBS["models.export"].local_only and VERBS["models.export"].scope == "read"
    tools = {t.name for t in asyncio.run(build_server(ws, actor=token).list_tools())}
    assert "models_show" in tools and "models_export" not in tools


def test_cli_exports_into_the_current_folder_and_refuses_to_overwrite(ws_dir, registered, capsys, monkeypatch):
    proc = CLI(ws_dir)("models", "export", "dispatch@v2", "--outtype", "q8_0", "--json")
    doc = json.loads(proc.stdout)
    written = ws_dir / "dispatch-v2-q8_0.gguf"
    assert doc["path"] == str(written.resolve()) and written.stat().st_size == doc["bytes"]
    assert doc["metadata"]["weightsmith.parent"] == "dispatch@v1"

    monkeypatch.chdir(ws_dir)
    code, out, err = cli_main(capsys, "models", "export", "dispatch@v2", "--outtype", "q8_0")
    assert code == 2 and out == "" and "already exists" in err and "--force" in err and "Traceback" not in err
    code, out, err = cli_main(capsys, "models", "export", "dispatch", "--outtype", "q8_0", "--force")
    assert code == 0 and f"Wrote {written.resolve()}" in out and "parent dispatch@v1; data docs@v1" in out
    code, out, err = cli_main(capsys, "models", "export", "dispatch@v7")
    assert code == 2 and "has no version v7" in err and "Traceback" not in err
    code, out, err = cli_main(capsys, "models", "export", "dispatch@v2", "--outtype", "q4_0")
    assert code == 2 and "invalid choice: 'q4_0'" in err
