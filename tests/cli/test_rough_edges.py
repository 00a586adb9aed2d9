"""The rough edges a new user hit, each through the real CLI (issue 12, part 4).

One module-scoped workspace runs a small pipeline with ``weightsmith worker --concurrency 2``: a
tokenizer asked for more tokens than the corpus gives, and two variants of one recipe (``pretrain``
and ``pretrain_b``, which sets ``threads: 1``) trained at once. The tests read what it printed while
it worked, the results it recorded, ``models list`` and ``jobs metrics`` at 80 columns, and what
``gc`` frees.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import CLI, EXAMPLES, query_db

DOCS = EXAMPLES / "tiny" / "data" / "docs"
NARROW = {"COLUMNS": "80"}


def _pipeline(path: Path, stages: dict, name: str = "edges") -> Path:
    spec = {"name": name, "model": name, "seed": 1,
            "datasets": {"docs": {"path": str(DOCS), "format": "text"}},
            "defaults": {"device": "cpu", "logging_steps": 1},
            "stages": stages}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))  # the stages in the order written: job ids follow it
    return path


@pytest.fixture(scope="module")
def worked(tmp_path_factory):
    """The workspace after a worker ran tokenizer → (pretrain, pretrain_b) two at a time, and what it printed."""
    root = tmp_path_factory.mktemp("edges")
    cli = CLI(root)
    cli("init")
    tiny = {"data": "docs", "tokenizer": "tokenizer", "size": "tiny", "seq_len": 32, "batch_size": 4, "max_steps": 4}
    pipeline = _pipeline(root / "p.yaml", {
        "tokenizer": {"data": "docs", "vocab_size": 1024},  # min_frequency 2: the tiny corpus gives fewer
        "pretrain": tiny,
        "pretrain_b": {"kind": "pretrain", **tiny, "threads": 1},
    })
    cli("run", str(pipeline), "--detach")
    worker = subprocess.Popen(
        [sys.executable, "-m", "weightsmith", "worker", "--until-idle", "--concurrency", "2", "--poll", "0.2",
         "--progress-every", "0"],
        cwd=root, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines, alive_at_first_stage = [], None
    for line in worker.stdout:  # read as it is printed: progress must come while it works, not at exit
        lines.append(line.rstrip("\n"))
        if alive_at_first_stage is None and line.startswith("▶"):
            alive_at_first_stage = worker.poll() is None
    err = worker.stderr.read()
    assert worker.wait(timeout=600) == 0, err[-3000:]
    return cli, root, lines, alive_at_first_stage


def _result(root: Path, job: int) -> dict:
    return json.loads(next((root / ".weightsmith" / "jobs" / str(job)).glob("run-*/result.json")).read_text())


def test_the_worker_prints_progress_as_it_works(worked):
    _cli, _root, lines, alive = worked
    assert alive, "the first job's line came only after the worker had exited"
    text = "\n".join(lines)
    assert lines[0].startswith("worker ") and "2 at a time" in lines[0]
    assert "▶ tokenizer (tokenizer, job 1)" in text and "✓ tokenizer (job 1) succeeded in" in text
    for job, stage in ((2, "pretrain"), (3, "pretrain_b")):
        assert f"▶ {stage} (pretrain, job {job})" in text
        assert any(line.startswith(f"  {stage} (job {job}): step 4/4  loss ") for line in lines), text
        assert f"✓ {stage} (job {job}) succeeded in" in text
    assert lines[-1].endswith("ran 3 job(s)")


def test_a_tokenizer_smaller_than_its_vocab_size_says_so(worked):
    _cli, root, lines, _ = worked
    result = _result(root, 1)
    assert result["vocab_size_requested"] == 1024 and result["vocab_size"] < 1024
    said = (f"the tokenizer has {result['vocab_size']:,} tokens, not the 1,024 vocab_size asked for: no pair of "
            "symbols in the corpus occurs 2 or more times any more (min_frequency: 2)")
    assert result["warnings"][0].startswith(said)
    assert f"note: {said}" in next((root / ".weightsmith" / "jobs" / "1").glob("run-*/stage.log")).read_text()
    assert any(line.startswith(f"  note: {said}") for line in lines)  # the worker shows it too


def test_result_json_names_the_folder_that_exists(worked):
    cli, root, _, _ = worked
    for job in (1, 2, 3):
        output = Path(_result(root, job)["output_dir"])
        assert output.is_dir() and (output / "tokenizer.json").is_file(), output
    versions = {v["pipeline_stage"]: v for v in cli.json("models", "list")}
    assert _result(root, 2)["output_dir"] == versions["pretrain"]["path"]
    assert _result(root, 3)["output_dir"] == versions["pretrain_b"]["path"]


def test_threads_are_the_stage_setting_or_a_share_of_the_cores(worked):
    _cli, root, _, _ = worked
    for job in (2, 3):  # pretrain_b: threads: 1; pretrain: cores // 2 running, at most the worker's OMP_NUM_THREADS=1
        assert _result(root, job)["threads"] == 1
        log = next((root / ".weightsmith" / "jobs" / str(job)).glob("run-*/stage.log")).read_text()
        assert "pretrain: computing with 1 CPU thread(s)" in log


def test_worker_divides_the_cores_among_its_concurrent_stages(worked, monkeypatch):
    from weightsmith.jobs.worker import Worker
    from weightsmith.workspace import Workspace

    _cli, root, _, _ = worked
    ws = Workspace.open(root)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(8)))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert Worker(ws, concurrency=4).stage_threads({}) == 2
    assert Worker(ws, concurrency=3).stage_threads({"threads": 5}) == 5  # the stage's own setting wins
    assert Worker(ws, concurrency=1).stage_threads({}) is None  # alone: the libraries' default
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert Worker(ws, concurrency=2).stage_threads({}) == 1


def test_models_list_names_the_stage_and_fits_80_columns(worked):
    cli, _root, _, _ = worked
    text = cli("models", "list", env=NARROW).stdout
    assert max(map(len, text.splitlines())) <= 80
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines() if line.startswith("│")]
    assert sorted((r[1], r[2]) for r in rows) == [("pretrain", "pretrain"), ("pretrain_b", "pretrain")]
    shown = cli.json("models", "show", "edges@v1")
    assert shown["pipeline_stage"] in ("pretrain", "pretrain_b") and shown["stage"] == "pretrain"


def test_jobs_metrics_fit_80_columns(worked):
    cli, _root, _, _ = worked
    text = cli("jobs", "metrics", "2", env=NARROW).stdout
    assert max(map(len, text.splitlines())) <= 80 and "…" not in text
    names = {m["name"] for m in cli.json("jobs", "metrics", "2")}
    assert {"loss", "lr", "grad_norm", "tokens_per_sec"} <= names
    for name in names:
        assert name in text, name


def test_long_alias_reasons_stay_readable_at_80_columns(worked):
    cli, _root, _, _ = worked
    reason = ("promoted by hand for the quarterly review while the gate suite is rewritten; the desk checked "
              "twenty answers against the catalog and found no regression")
    cli("models", "promote", "edges@v1", "--alias", "champion", "--force", "--reason", reason)
    cli("models", "promote", "edges@v2", "--alias", "champion", "--force", "--reason", "second variant wins")
    text = cli("models", "aliases", "edges", env=NARROW).stdout
    assert max(map(len, text.splitlines())) <= 80, text
    assert reason in " ".join(text.split())
    lines = text.splitlines()
    # A word alone on a line only ends a paragraph wrapped at the full width (never a column a word wide).
    lone = [i for i, line in enumerate(lines) if len(line.strip("│ ").split()) == 1 and line.strip("│ ") in reason]
    assert all(len(lines[i - 1]) >= 60 for i in lone), text


def test_data_show_is_a_summary_and_json_only_with_json(worked):
    cli, _root, _, _ = worked
    text = cli("data", "show", "docs", env=NARROW).stdout
    assert text.startswith("docs@v1  (text)\n") and "rows:       8 (0 duplicates)" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    doc = cli.json("data", "show", "docs")
    assert doc["ref"] == "docs@v1" and doc["rows"] == 8


def test_gc_drops_finished_jobs_checkpoints_and_keeps_versions(worked, tmp_path):
    cli, root, _, _ = worked
    jobs_dir = root / ".weightsmith" / "jobs"
    before = {j: sorted(p.name for p in (jobs_dir / str(j) / "work" / "checkpoints").iterdir()) for j in (2, 3)}
    assert all(before.values()), before
    # A queued job (a second pipeline, no worker): its folder is never touched.
    queued = cli.json("run", str(_pipeline(tmp_path / "q.yaml", {"tokenizer": {"data": "docs", "vocab_size": 300}},
                                           name="later")), "--detach")["jobs"][0]["id"]
    keep = jobs_dir / str(queued) / "work" / "checkpoints" / "checkpoint-1" / "model.safetensors"
    keep.parent.mkdir(parents=True)
    keep.write_bytes(b"x" * 1000)

    dry = cli.json("gc", "--dry-run")
    assert dry["dry_run"] and {j["job"] for j in dry["jobs"]} == {2, 3} and dry["bytes_freed"] > 100_000
    assert all((jobs_dir / str(j) / "work" / "checkpoints").is_dir() for j in (2, 3))  # a dry run deletes nothing

    # A stage still holding a finished job's work folder (here: this test) keeps it.
    fd = os.open(jobs_dir / "3" / "work" / ".stage.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        done = cli.json("gc")
    finally:
        os.close(fd)
    assert [j["job"] for j in done["jobs"]] == [2] and done["skipped"] == [
        {"job": 3, "stage": "pretrain_b", "reason": "a stage still holds its work folder"}]
    assert done["bytes_freed"] == next(j["bytes"] for j in dry["jobs"] if j["job"] == 2)
    assert not (jobs_dir / "2" / "work" / "checkpoints").exists() and keep.is_file()
    text = cli("gc", env=NARROW).stdout  # now the lock is free: job 3's go too
    assert max(map(len, text.splitlines())) <= 80
    assert text.strip().splitlines()[-1].startswith("Freed ") and "2 registered model version(s) kept" in text
    assert not (jobs_dir / "3" / "work" / "checkpoints").exists() and keep.is_file()
    # What stays: every registered version's folder, the runs' logs and results.
    from weightsmith.workspace.registry import is_model_dir

    db = root / ".weightsmith" / "weightsmith.db"
    assert all(is_model_dir(Path(path)) for (path,) in query_db(db, "SELECT path FROM model_versions"))
    assert "step" in next((jobs_dir / "2").glob("run-*/stage.log")).read_text() and _result(root, 2)["steps"] == 4
    assert query_db(db, "SELECT outcome, target FROM audit_log WHERE verb = 'workspace.gc' ORDER BY id")[0] == (
        "ok", f"dry run: {dry['bytes_freed']} bytes")


def test_gc_needs_the_admin_scope(worked):
    from weightsmith.errors import Forbidden
    from weightsmith.service import Actor, Context
    from weightsmith.service.gc import collect_garbage
    from weightsmith.workspace import Workspace

    _cli, root, _, _ = worked
    ws = Workspace.open(root)
    trainer = Actor(name="ci", kind="token", project=ws.project_name, scopes=frozenset({"read", "train"}), remote=True)
    with pytest.raises(Forbidden, match="'workspace.gc' needs the 'admin' scope"):
        collect_garbage(Context.for_actor(ws, trainer, adapter="api"), {"dry_run": True})
    admin = Actor(name="ops", kind="token", project=ws.project_name, scopes=frozenset({"admin"}), remote=True)
    seen = collect_garbage(Context.for_actor(ws, admin, adapter="api"), {"dry_run": True})
    assert all(j.path is None for j in seen.jobs)  # a remote caller is not told server paths


def test_a_chat_file_added_as_prompts_is_one_sentence_with_the_fix(worked, tmp_path):
    cli, _root, _, _ = worked
    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Part {n}?"},
                                                      {"role": "assistant", "content": "Steel."}]}) + "\n"
                             for n in range(50)))
    proc = cli("data", "add", "qa", str(chats), "--format", "prompt", check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2, proc.stderr
    assert lines[0].startswith(f"{chats}: lines 1, 2, 3, 4, 5 and 45 more (50 rows): the row has 'messages', like a "
                               "chat row, not a prompt row")
    assert lines[0].endswith("add the file with --format chat (in a pipeline or suite: format: chat)")
    assert lines[1] == f"error: {chats}: 50 problem(s) found; no dataset version was created."
    details = json.loads(cli("data", "add", "qa", str(chats), "--format", "prompt", "--json", check=False).stdout)
    assert len(details["details"]) == 50 and details["details"][49].startswith(f"{chats}:50: ")


def test_pipeline_cancel_stops_every_branch(worked, tmp_path):
    from weightsmith.jobs.queue import claim_next
    from weightsmith.workspace import Workspace

    cli, root, _, _ = worked
    pipeline = _pipeline(tmp_path / "branches.yaml", {
        "tok_b": {"kind": "tokenizer", "data": "docs", "vocab_size": 300},  # first: the oldest job, claimed first
        "tok_a": {"kind": "tokenizer", "data": "docs", "vocab_size": 300},
        "tok_c": {"kind": "tokenizer", "data": "docs", "vocab_size": 300, "after": ["tok_a"]},
    }, name="branches")
    submitted = cli.json("run", str(pipeline), "--detach")
    pid, (b, a, c) = submitted["pipeline"], [j["id"] for j in submitted["jobs"]]
    # tok_b is running: a worker (elsewhere) has claimed it; a claim needs no stage process.
    assert claim_next(Workspace.open(root), "elsewhere:1", pipeline_id=pid)["id"] == b
    db = root / ".weightsmith" / "weightsmith.db"

    # Cancelling one job says the pipeline goes on, and how to stop it all.
    said = cli("jobs", "cancel", str(a)).stderr
    assert f"pipeline {pid} goes on: jobs {b} tok_b (running) do not depend on it; " \
           f"'weightsmith pipelines cancel {pid}' stops them all." in said
    assert query_db(db, "SELECT state FROM jobs WHERE id=?", c) == [("cancelled",)]  # tok_a's dependant

    shown = cli.json("pipelines", "cancel", str(pid))
    states = {j["stage"]: j["state"] for j in shown["jobs"]}
    assert states == {"tok_a": "cancelled", "tok_b": "running", "tok_c": "cancelled"}
    assert query_db(db, "SELECT cancel_requested FROM jobs WHERE id=?", b) == [(1,)]  # its worker is asked to stop
    listed = cli("pipelines", "list", env=NARROW).stdout
    assert max(map(len, listed.splitlines())) <= 80 and "branches" in listed


def test_threads_is_a_setting_of_every_stage_and_a_default(tmp_path):
    from weightsmith.config import load_pipeline

    tiny = {"data": "docs", "tokenizer": "tokenizer", "size": "tiny"}
    path = _pipeline(tmp_path / "t.yaml", {"tokenizer": {"data": "docs"}, "pretrain": tiny,
                                           "pretrain_b": {"kind": "pretrain", **tiny, "threads": 2}})
    raw = yaml.safe_load(path.read_text())
    raw["defaults"]["threads"] = 1
    path.write_text(yaml.safe_dump(raw))
    stages = {s.name: s.config["threads"] for s in load_pipeline(path).stages}
    assert stages == {"tokenizer": 1, "pretrain": 1, "pretrain_b": 2}  # the stage's own value wins
