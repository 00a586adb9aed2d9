"""Concurrent callers of one verb get one answer, never a raw database error (issue 11, section 2).

Every test starts real ``weightsmith`` processes that wait on one barrier and then collide on
the same read-then-insert in a real SQLite workspace; each runs several trials, as the race
is a matter of timing.
"""

from __future__ import annotations

import json
import sqlite3

import pytest

from helpers import EXAMPLES, query_db, run_at_once, tiny_pretrain_pipeline

TASKS = EXAMPLES / "tiny" / "data" / "tasks.jsonl"
TRIALS = 5


def _fresh_workspace(path):
    from weightsmith.workspace import Workspace

    Workspace.init(path)
    return path, path / ".weightsmith" / "weightsmith.db"


def _no_raw_database_error(procs) -> None:
    for proc in procs:
        text = proc.stdout + proc.stderr
        for leak in ("Traceback", "IntegrityError", "OperationalError", "[SQL:", "INSERT INTO", "parameters"):
            assert leak not in text, text


def test_concurrent_data_add_of_the_same_file_makes_one_version(tmp_path):
    for trial in range(TRIALS):
        root, db = _fresh_workspace(tmp_path / f"ws{trial}")  # fresh: the first caller also creates the project
        # Four callers: against the unfixed code, 17 trials of 20 had a caller fail (12 of 20 with two callers).
        procs = run_at_once(root, [["data", "add", "docs", str(TASKS), "--format", "chat"]] * 4)
        _no_raw_database_error(procs)
        assert [p.returncode for p in procs] == [0] * 4, [p.stderr for p in procs]
        said = sorted(p.stdout.split(",")[0].rsplit(":", 1)[0] for p in procs)  # "Added docs@v1: 18 rows, ..."
        assert said == ["Added docs@v1"] + ["Unchanged: docs@v1"] * 3, [p.stdout for p in procs]
        assert query_db(db, "SELECT count(*) FROM dataset_versions") == [(1,)]
        assert query_db(db, "SELECT count(*) FROM datasets") == [(1,)]
        assert query_db(db, "SELECT count(*) FROM projects") == [(1,)]


def test_concurrent_data_add_of_different_files_makes_consecutive_versions(tmp_path):
    root, db = _fresh_workspace(tmp_path / "ws")
    rows = TASKS.read_text().splitlines()
    files = []
    for i in range(3):  # three different contents under one name
        path = tmp_path / f"tasks{i}.jsonl"
        path.write_text("\n".join(rows[: len(rows) - i]) + "\n")
        files.append(path)
    for trial in range(3):
        procs = run_at_once(root, [["data", "add", f"t{trial}", str(f), "--format", "chat", "--json"] for f in files])
        _no_raw_database_error(procs)
        assert [p.returncode for p in procs] == [0, 0, 0], [p.stderr for p in procs]
        docs = [json.loads(p.stdout) for p in procs]
        assert sorted(d["version"] for d in docs) == [1, 2, 3] and all(d["created"] for d in docs)
        assert sorted(d["rows"] for d in docs) == [len(rows) - 2, len(rows) - 1, len(rows)]
    assert query_db(db, "SELECT count(*) FROM dataset_versions") == [(9,)]


def test_concurrent_pipeline_submissions_with_one_idempotency_key_queue_one_pipeline(tmp_path):
    pipeline = tiny_pretrain_pipeline(tmp_path / "p.yaml", "race", max_steps=1)
    for trial in range(TRIALS):
        root, db = _fresh_workspace(tmp_path / f"ws{trial}")
        procs = run_at_once(root, [["run", str(pipeline), "--detach", "--idempotency-key", "k1", "--json"]] * 2)
        _no_raw_database_error(procs)
        assert [p.returncode for p in procs] == [0, 0], [p.stdout + p.stderr for p in procs]
        first, second = (json.loads(p.stdout) for p in procs)
        assert first["pipeline"] == second["pipeline"]
        assert [j["id"] for j in first["jobs"]] == [j["id"] for j in second["jobs"]]
        assert [j["stage"] for j in first["jobs"]] == ["tokenizer", "pretrain"]
        assert query_db(db, "SELECT count(*) FROM pipelines") == [(1,)]
        assert query_db(db, "SELECT count(*) FROM jobs") == [(2,)]
        assert query_db(db, "SELECT count(*) FROM dataset_versions") == [(1,)]


def _register_code(root, name: str) -> str:
    return (
        "import pathlib, tempfile\n"
        "from weightsmith.workspace import Workspace\n"
        "from weightsmith.workspace.registry import register_version\n"
        "src = pathlib.Path(tempfile.mkdtemp())\n"
        "(src / 'config.json').write_text('{\"model_type\": \"llama\"}')\n"
        "(src / 'weights.bin').write_bytes(b'same bytes in every process')\n"
        f"v = register_version(Workspace.open({str(root)!r}), {name!r}, src, stage='sft', move=True)\n"
        "print(v['ref'])\n"
    )


def test_concurrent_registrations_of_one_model_get_consecutive_versions(tmp_path):
    """What two workers finishing stages of one model at the same moment do (the same output, too)."""
    root, db = _fresh_workspace(tmp_path / "ws")
    for trial in range(3):
        procs = run_at_once(root, [["--python", _register_code(root, f"m{trial}")]] * 3)
        _no_raw_database_error(procs)
        assert [p.returncode for p in procs] == [0, 0, 0], [p.stderr[-3000:] for p in procs]
        assert sorted(p.stdout.strip() for p in procs) == [f"m{trial}@v1", f"m{trial}@v2", f"m{trial}@v3"]
    assert query_db(db, "SELECT count(*) FROM models") == [(3,)]


def test_concurrent_promotions_to_one_alias_move_it_once(tmp_path):
    root, db = _fresh_workspace(tmp_path / "ws")
    for trial in range(3):
        run_at_once(root, [["--python", _register_code(root, f"m{trial}")]])
        promote = ["models", "promote", f"m{trial}@v1", "--alias", "champion", "--force", "--reason", "race"]
        procs = run_at_once(root, [promote] * 2)
        _no_raw_database_error(procs)
        assert [p.returncode for p in procs] == [0, 0], [p.stderr for p in procs]
        moved, unchanged = sorted((p.stdout.strip() for p in procs), key=lambda text: "nothing moved" in text)
        assert moved.startswith(f"m{trial}@champion: (new) → m{trial}@v1 FORCED"), moved
        assert unchanged == f"m{trial}@champion is already m{trial}@v1; nothing moved.", unchanged
    assert query_db(db, "SELECT count(*) FROM model_aliases") == [(3,)]
    assert query_db(db, "SELECT count(*) FROM model_alias_moves") == [(3,)]


def test_a_database_error_is_one_sentence_without_sql_or_values(cli, ws_dir):
    """The last resort: a constraint the database enforces and the code does not foresee."""
    db = ws_dir / ".weightsmith" / "weightsmith.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TRIGGER no_secret BEFORE INSERT ON datasets WHEN NEW.name = 'secret-name' "
                "BEGIN SELECT RAISE(ABORT, 'datasets are frozen'); END")
    con.commit()
    con.close()
    proc = cli("data", "add", "secret-name", str(TASKS), "--format", "chat", check=False)
    assert proc.returncode == 1
    _no_raw_database_error([proc])
    assert "secret-name" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: a concurrent change to the workspace conflicted with this one (datasets are frozen); run the command "
        "again (set WEIGHTSMITH_DEBUG=1 for the traceback)"
    ]


def test_concurrent_first_opens_migrate_once(tmp_path):
    """Two `init`s, or a worker and a command after an upgrade: one creates the tables, the others wait."""
    for trial in range(3):
        root = tmp_path / f"ws{trial}"
        root.mkdir()
        procs = run_at_once(root, [["init", str(root)]] * 3)
        _no_raw_database_error(procs)
        assert [p.returncode for p in procs] == [0, 0, 0], [p.stderr for p in procs]
        (head,) = query_db(root / ".weightsmith" / "weightsmith.db", "SELECT version_num FROM alembic_version")
        assert head[0] >= "0003"


def test_a_lock_held_past_the_busy_timeout_is_one_sentence(tmp_path):
    """What the CLI prints when another process keeps the write lock longer than SQLite waits."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    from weightsmith.errors import describe_unexpected

    db = tmp_path / "x.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("CREATE TABLE t (secret TEXT)")
    holder.execute("BEGIN IMMEDIATE")
    engine = create_engine(f"sqlite:///{db}", connect_args={"timeout": 0.05})
    try:
        with engine.begin() as con:
            con.execute(text("INSERT INTO t VALUES (:v)"), {"v": "hunter2"})
    except OperationalError as exc:
        assert "INSERT" in str(exc) and "hunter2" in str(exc)  # what the CLI used to print
        said = describe_unexpected(exc)
    else:
        raise AssertionError("the insert should have waited for the lock and given up")
    finally:
        holder.close()
    assert said == ("the workspace database stayed locked by another weightsmith process for longer than the busy "
                    "timeout; run the command again when that process has finished writing")


def test_transact_runs_the_work_again_when_its_insert_lost_a_race(ws):
    """Where writers are not serialized (PostgreSQL), a read can miss a row committed just after it;
    the insert then fails on the unique constraint, and the work runs again and finds the row."""
    from sqlalchemy import select
    from sqlalchemy.exc import IntegrityError

    from weightsmith.workspace.models import Project

    with ws.session() as s:  # the concurrent caller that won
        s.add(Project(name="shared"))
        s.flush()
        winner = s.scalar(select(Project.id).where(Project.name == "shared"))
    attempts = []

    def get_or_add(s) -> str:
        attempts.append(1)
        row = s.scalar(select(Project).where(Project.name == "shared")) if len(attempts) > 1 else None  # 1st: missed
        if row is None:
            row = Project(name="shared")
            s.add(row)
            s.flush()
            return "created"
        return f"found {row.id}"

    answer = ws.transact(get_or_add)
    assert query_db(ws.dir / "weightsmith.db", "SELECT id FROM projects WHERE name = 'shared'") == [(winner,)]
    assert answer == f"found {winner}" and len(attempts) == 2

    def always_insert(s) -> None:
        s.add(Project(name="shared"))
        s.flush()

    with pytest.raises(IntegrityError):  # a real conflict, not a race: raised after the last attempt
        ws.transact(always_insert, attempts=2)
