"""Workspace discovery, migrations, the artifact store, dataset versioning through the CLI."""

from __future__ import annotations

import json
import sqlite3

from weightsmith.workspace import Workspace
from weightsmith.workspace.store import ArtifactStore, tree_hash

from helpers import CLI, EXAMPLES

TINY = EXAMPLES / "tiny" / "data"


def test_init_creates_sqlite_wal_database_at_head_revision(tmp_path):
    cli = CLI(tmp_path)
    doc = cli.json("init")
    assert doc["workspace"] == str(tmp_path)
    db = tmp_path / ".weightsmith" / "weightsmith.db"
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT version_num FROM alembic_version").fetchone()[0] >= "0001"
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"projects", "datasets", "dataset_versions", "jobs", "runs", "models", "model_versions"} <= tables
    cli("init")  # twice is fine


def test_workspace_is_found_by_walking_up_and_by_env(tmp_path):
    Workspace.init(tmp_path)
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    assert CLI(nested).json("data", "list") == []
    other = tmp_path.parent / (tmp_path.name + "-elsewhere")
    other.mkdir()
    proc = CLI(other)("data", "list", check=False)
    assert proc.returncode == 2 and "weightsmith init" in proc.stderr
    assert CLI(other).json("data", "list", env={"WEIGHTSMITH_HOME": str(tmp_path)}) == []
    assert CLI(other).json("data", "list", "--workspace", str(tmp_path)) == []


def test_data_add_versions_by_content_hash(cli, tmp_path):
    first = cli.json("data", "add", "tasks", str(TINY / "tasks.jsonl"), "--format", "chat")
    assert first["created"] and first["version"] == 1 and first["rows"] == 18 and first["format"] == "chat"
    again = cli.json("data", "add", "tasks", str(TINY / "tasks.jsonl"), "--format", "chat")
    assert not again["created"] and again["version"] == 1 and again["hash"] == first["hash"]
    changed = tmp_path / "more.jsonl"
    changed.write_text((TINY / "tasks.jsonl").read_text() + json.dumps(
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}) + "\n")
    second = cli.json("data", "add", "tasks", str(changed), "--format", "chat")
    assert second["version"] == 2 and second["rows"] == 19
    listed = cli.json("data", "list")
    assert [(d["name"], d["version"]) for d in listed] == [("tasks", 1), ("tasks", 2)]
    assert {"name", "version", "format", "rows", "hash", "tokens_estimate", "path"} <= set(listed[0])
    assert cli.json("data", "show", "tasks@v1")["hash"] == first["hash"]
    assert cli.json("data", "show", "tasks")["version"] == 2


def test_bad_data_exits_2_lists_every_line_and_creates_nothing(cli, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n'
                   "{not json\n"
                   '{"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "a"}]}\n')
    proc = cli("data", "add", "t", str(bad), "--format", "chat", check=False)
    assert proc.returncode == 2
    assert f"{bad}:2:" in proc.stderr and f"{bad}:3:" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert cli.json("data", "list") == []
    doc = json.loads(cli("data", "add", "t", str(bad), "--format", "chat", "--json", check=False).stdout)
    assert len(doc["details"]) == 2 and "no dataset version" in doc["error"]


def test_data_add_refuses_unknown_format_and_format_change(cli):
    proc = cli("data", "add", "x", str(TINY / "tasks.jsonl"), "--format", "chats", check=False)
    assert proc.returncode == 2 and "did you mean 'chat'" in proc.stderr
    cli("data", "add", "x", str(TINY / "tasks.jsonl"), "--format", "chat")
    proc = cli("data", "add", "x", str(TINY / "docs"), "--format", "text", check=False)
    assert proc.returncode == 2 and "holds chat data" in proc.stderr


def test_artifact_store_is_content_addressed(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    h1, p1 = store.put_bytes(b"abc", ".txt")
    h2, p2 = store.put_bytes(b"abc", ".txt")
    assert h1 == h2 and p1 == p2 and p1.read_bytes() == b"abc"
    src = tmp_path / "model"
    src.mkdir()
    (src / "config.json").write_text("{}")
    digest, stored = store.put_tree(src)
    assert digest == tree_hash(src) == tree_hash(stored)
    assert not list((tmp_path / "store" / "tmp").iterdir())  # nothing half-written left behind
