"""Clean job lifecycles under killed and paused workers, with real worker and stage processes.

A job whose worker was SIGKILLed is cancelled or retried without running anything; a worker paused
(SIGSTOP) past the heartbeat window loses its job to another worker, and the two never train in the
job's work folder at once; a paused worker whose stage finished registers nothing when it wakes.
The heartbeat window is a few seconds here (``WEIGHTSMITH_STALE_AFTER_S``), so each test takes seconds.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import CLI, EXAMPLES, query_db, wait_for


def _env(stale_after_s: float) -> dict[str, str]:
    return {"WEIGHTSMITH_STALE_AFTER_S": str(stale_after_s), "OMP_NUM_THREADS": "1"}


def _workspace(tmp_path: Path) -> tuple[CLI, Path]:
    cli = CLI(tmp_path / "ws")
    cli.cwd.mkdir()
    cli("init")
    return cli, cli.cwd / ".weightsmith" / "weightsmith.db"


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    """The tiny example's tokenizer, trained once here: a pipeline's tokenizer stage would cost a process a test."""
    from weightsmith.data.tokenizer import train_tokenizer

    texts = [path.read_text() for path in sorted((EXAMPLES / "tiny" / "data" / "docs").iterdir())]
    path = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(texts, vocab_size=320, min_frequency=1).save_pretrained(path)
    return path


def _submit(cli: CLI, tmp_path: Path, tokenizer: Path, stages: tuple[str, ...] = ("pretrain",), **pretrain) -> int:
    """Queue independent tiny pretrain jobs (by default ones that train far longer than any test waits).

    Returns the first job's id; the others follow it.
    """
    stage = {"data": "docs", "tokenizer": str(tokenizer), "size": "tiny", "seq_len": 32, "batch_size": 4,
             "max_steps": 100_000, "save_steps": 20, **pretrain}
    spec = {
        "name": "life", "model": "life", "seed": 3,
        "datasets": {"docs": {"path": str(EXAMPLES / "tiny" / "data" / "docs"), "format": "text"}},
        "defaults": {"device": "cpu", "logging_steps": 1},
        "stages": {name: {"kind": "pretrain", **stage} for name in stages},
    }
    (tmp_path / "life.yaml").write_text(yaml.safe_dump(spec))
    return cli.json("run", str(tmp_path / "life.yaml"), "--detach")["jobs"][0]["id"]


def _worker(cli: CLI, stale_after_s: float, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "weightsmith", "worker", "--poll", "0.2", *args],
        cwd=cli.cwd, env={**os.environ, **_env(stale_after_s)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )


def _worker_name(worker: subprocess.Popen) -> str:
    return f"{socket.gethostname()}:{worker.pid}"


def _training_stage(db: Path, job: int, run_number: int = 1) -> int | None:
    """The pid of the job's ``run_number``-th run once its stage has logged a training step."""
    rows = query_db(db, "SELECT r.pid, EXISTS (SELECT 1 FROM run_metrics m WHERE m.run_id = r.id) FROM runs r "
                        "WHERE r.job_id = ? ORDER BY r.id", job)
    if len(rows) < run_number:
        return None
    pid, trained = rows[run_number - 1]
    return pid if pid and trained else None


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, dead but not yet reaped by its paused parent, counts as dead)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


def _job(db: Path, job: int) -> tuple:
    return query_db(db, "SELECT state, error, attempts, worker FROM jobs WHERE id = ?", job)[0]


def _stop(*workers: subprocess.Popen) -> list[int]:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGCONT)
            worker.send_signal(signal.SIGTERM)
    return [worker.wait(timeout=60) for worker in workers]


def _log(db: Path, job: int, run_number: int) -> str:
    path = query_db(db, "SELECT log_path FROM runs WHERE job_id = ? ORDER BY id", job)[run_number - 1][0]
    return Path(path).read_text(errors="replace")


def test_cancel_of_a_job_whose_worker_was_killed_finalises_it_without_starting_a_stage(tmp_path, tokenizer_dir):
    cli, db = _workspace(tmp_path)
    job = _submit(cli, tmp_path, tokenizer_dir)
    window = 10  # long enough for the cancel below to land inside it, on a busy machine too
    worker = _worker(cli, window)
    try:
        stage = wait_for(lambda: _training_stage(db, job), what="pretrain to train")
    finally:
        worker.kill()  # no SIGTERM, no cleanup: the job stays 'running' with nobody running it
        worker.wait(timeout=60)
    wait_for(lambda: not _alive(stage), timeout=30, what="the stage to die with its worker")

    cancel = cli("jobs", "cancel", str(job), env=_env(window))
    assert cancel.stdout.strip() == (
        f"job {job}: cancel requested; its worker stops the stage within seconds (if that worker is gone, the job is "
        f"cancelled once its heartbeat is {window} s old: by any worker, or by cancelling it again)"
    )
    retry = cli("jobs", "retry", str(job), check=False, env=_env(window))
    assert retry.returncode == 2
    assert retry.stderr.strip() == (f"error: job {job} is running on worker {_worker_name(worker)}, which was asked to "
                                    f"cancel it; retry it once it is cancelled ('weightsmith jobs show {job}').")

    # The next worker finalises the job as cancelled once it is stale, and runs nothing for it.
    later = _worker(cli, window, "--until-idle", "--json")
    out, err = later.communicate(timeout=180)
    assert later.returncode == 0, err[-3000:]
    assert json.loads(out)["jobs_run"] == 0
    shown = cli.json("jobs", "show", str(job))
    assert shown["state"] == "cancelled" and shown["attempts"] == 1
    assert shown["error"] == "cancelled by user; its worker had stopped heart-beating, so it did not run again"
    assert [run["status"] for run in shown["runs"]] == ["cancelled"]  # no second stage process was started


def test_a_running_job_whose_worker_died_is_retried_or_cancelled_at_once_once_stale(tmp_path, tokenizer_dir):
    cli, db = _workspace(tmp_path)
    first = _submit(cli, tmp_path, tokenizer_dir, stages=("one", "two"))
    jobs = (first, first + 1)
    window = 5  # a worker's heartbeat (every window/4 s) late by a whole window on a loaded machine would lose its job
    workers = [_worker(cli, window), _worker(cli, window)]  # one job each
    retried, cancelled = jobs
    try:
        for job in jobs:
            wait_for(lambda job=job: _training_stage(db, job), what=f"job {job} to train")
        owner = query_db(db, "SELECT worker FROM jobs WHERE id = ?", retried)[0][0]
        # Refused while its heartbeat is fresh. Asked while the worker still beats (every window/4 s), so that
        # a slow machine, whose CLI may take longer than the window to start, still sees the refusal.
        refused = cli("jobs", "retry", str(retried), check=False, env=_env(window))
    finally:
        for worker in workers:
            worker.kill()  # no SIGTERM, no cleanup: both jobs stay 'running' with nobody running them
            worker.wait(timeout=60)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.startswith(f"error: job {retried} is running on worker {owner} (last heartbeat ")
    assert f"; to run it again, stop it with 'weightsmith jobs cancel {retried}' and then retry it, or, if that " \
           f"worker has died, retry it once its heartbeat is {window} s old (in " in refused.stderr
    assert refused.stderr.count("\n") == 1
    assert _job(db, retried)[:3] == ("running", None, 1)  # the refusal changed nothing
    time.sleep(window + 0.5)

    done = cli("jobs", "retry", str(retried), env=_env(window))
    assert done.stdout.strip() == (f"job {retried} re-queued: its worker had stopped heart-beating (its checkpoints "
                                   "are kept; run a worker)")
    assert _job(db, retried)[:3] == ("queued", None, 1)
    assert query_db(db, "SELECT status FROM runs WHERE job_id = ?", retried) == [("failed",)]

    done = cli("jobs", "cancel", str(cancelled), env=_env(window))  # no worker needed to finish it
    why = "cancelled by user; its worker had stopped heart-beating, so nothing was running"
    assert done.stdout.strip() == f"job {cancelled}: {why}"
    assert _job(db, cancelled)[:3] == ("cancelled", why, 1)
    assert query_db(db, "SELECT status FROM runs WHERE job_id = ?", cancelled) == [("cancelled",)]


def test_a_paused_worker_never_trains_beside_the_worker_that_took_its_job(tmp_path, tokenizer_dir):
    cli, db = _workspace(tmp_path)
    job = _submit(cli, tmp_path, tokenizer_dir)
    window = 5
    first = _worker(cli, window)
    second = None
    try:
        old_stage = wait_for(lambda: _training_stage(db, job), what="pretrain to train")
        os.kill(first.pid, signal.SIGSTOP)  # its stage trains on, in its own process group
        second = _worker(cli, window)

        def new_stage_started():
            rows = query_db(db, "SELECT pid FROM runs WHERE job_id = ? ORDER BY id", job)
            return rows[1][0] if len(rows) == 2 and rows[1][0] else None

        new_stage = wait_for(new_stage_started, timeout=120, what="the second worker to start a stage")
        # The old stage was stopped before the new one started, and does not come back.
        assert not _alive(old_stage)
        assert _job(db, job)[2:] == (2, _worker_name(second))
        assert f"stopped pid {old_stage} on {socket.gethostname()}: a stage of an earlier attempt of this job" \
               in _log(db, job, 2)
        wait_for(lambda: _training_stage(db, job, run_number=2), what="the new stage to train")
        assert _alive(new_stage) and not _alive(old_stage)
    finally:
        os.kill(first.pid, signal.SIGCONT)

    # The woken worker finds its claim gone: it stops, writes nothing for the job, and leaves the new stage be.
    wait_for(lambda: "this attempt was superseded" in _log(db, job, 1), timeout=60, what="the woken worker to stand down")
    time.sleep(1.5)
    assert _alive(new_stage) and first.poll() is None
    assert _job(db, job)[0] == "running" and _job(db, job)[2:] == (2, _worker_name(second))
    assert query_db(db, "SELECT status FROM runs WHERE job_id = ? ORDER BY id", job) == [("failed",), ("running",)]

    cli("jobs", "cancel", str(job), env=_env(window))
    wait_for(lambda: _job(db, job)[0] == "cancelled", timeout=60, what="the cancel")
    assert not _alive(new_stage)
    assert _stop(first, second) == [0, 0]


def test_a_paused_worker_whose_stage_finished_registers_nothing_when_it_wakes(tmp_path, tokenizer_dir):
    cli, db = _workspace(tmp_path)
    job = _submit(cli, tmp_path, tokenizer_dir, max_steps=40, save_steps=20)
    window = 3
    first = _worker(cli, window)
    second = None
    try:
        old_stage = wait_for(lambda: _training_stage(db, job), what="pretrain to train")
        os.kill(first.pid, signal.SIGSTOP)
        wait_for(lambda: not _alive(old_stage), timeout=120, what="the paused worker's stage to finish")
        second = _worker(cli, window)  # takes the job; its stage restores the final checkpoint and registers it
        wait_for(lambda: _job(db, job)[0] == "succeeded", timeout=180, what="the second worker to finish the job")
    finally:
        os.kill(first.pid, signal.SIGCONT)
    wait_for(lambda: query_db(db, "SELECT exit_code FROM runs WHERE job_id = ? ORDER BY id", job)[0][0] is not None,
             timeout=60, what="the woken worker to record its stage's end")
    versions = cli.json("models", "list")
    runs = query_db(db, "SELECT id, status, exit_code, output_path FROM runs WHERE job_id = ? ORDER BY id", job)
    assert [(status, code, output is None) for _, status, code, output in runs] == [
        ("failed", 0, True), ("succeeded", 0, False)]
    assert [(v["ref"], v["run"]) for v in versions] == [("life@v1", runs[1][0])]  # the woken worker registered nothing
    assert "this attempt was superseded" in _log(db, job, 1)
    assert _stop(first, second) == [0, 0]


_HOLDER = """
import fcntl, json, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, json.dumps({"pid": os.getpid(), "pgid": os.getpid(), "host": "elsewhere"}).encode())
print("held", flush=True)
time.sleep(600)
"""


def test_a_stage_waits_for_a_work_folder_held_elsewhere_then_fails_with_one_sentence(tmp_path):
    """A stale stage on another machine cannot be stopped from here: the new one waits, then gives up."""
    work = tmp_path / "work"
    work.mkdir()
    spec = {"kind": "pretrain", "config": {}, "inputs": {}, "work_dir": str(work), "output_dir": str(tmp_path / "out"),
            "metrics_path": str(tmp_path / "metrics.jsonl"), "result_path": str(tmp_path / "result.json")}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(work / ".stage.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        stage = subprocess.run([sys.executable, "-m", "weightsmith.training.runner", str(tmp_path / "spec.json")],
                               capture_output=True, text=True, timeout=120,
                               env={**os.environ, "OMP_NUM_THREADS": "1", "WEIGHTSMITH_WORK_LOCK_WAIT_S": "2"})
        waited = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    assert stage.returncode == 2
    assert stage.stderr.strip() == (
        f"error: work folder {work} is still in use by pid {holder.pid} on elsewhere after 2 s: a stage of an earlier "
        "attempt of this job; stop that process (or let it end), then retry the job."
    )
    assert waited >= 2
    assert not (tmp_path / "out").exists() and not (tmp_path / "metrics.jsonl").exists()
