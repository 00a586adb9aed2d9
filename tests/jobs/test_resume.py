"""A stage SIGKILLed mid-training resumes from its last checkpoint when the job is retried,
and ends with the same weights as a run that was never interrupted (CPU, same seed) — in one
process, and in two data-parallel ones (torchrun) whose launcher is killed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import CLI, query_db, tiny_pretrain_pipeline, wait_for

from weightsmith.training.checkpoint import COMPLETE_MARKER

MAX_STEPS, SAVE_STEPS = 300, 10  # the kill must land well before the end, even on a slow machine


def _pipeline(tmp_path, processes: int):
    # The same global batch of 4 sequences either way.
    return tiny_pretrain_pipeline(tmp_path / "resume.yaml", "resume", max_steps=MAX_STEPS, save_steps=SAVE_STEPS,
                                  processes=processes, batch_size=4 // processes)


def _kill_stage_after_two_checkpoints(db, job: int) -> None:
    """SIGKILL the job's stage process once it has committed two checkpoints; wait for the job to fail."""
    kill_after = 2 * SAVE_STEPS + 3  # two checkpoints written, still well before the end

    def running_pid():
        rows = query_db(
            db,
            "SELECT r.pid, MAX(m.step) FROM runs r JOIN run_metrics m ON m.run_id = r.id "
            "WHERE r.job_id = ? AND r.status = 'running' GROUP BY r.id",
            job,
        )
        return rows[0][0] if rows and rows[0][1] is not None and rows[0][1] >= kill_after else None

    pid = wait_for(running_pid, what="pretrain to pass the second checkpoint")
    os.kill(pid, signal.SIGKILL)  # the stage process: with processes: 2, torchrun's launcher
    state = wait_for(
        lambda: (query_db(db, "SELECT state, error FROM jobs WHERE id = ?", job) or [[None]])[0]
        if query_db(db, "SELECT state FROM jobs WHERE id = ?", job)[0][0] == "failed" else None,
        what="the killed job to be marked failed",
    )
    assert "signal 9" in state[1]


@pytest.mark.parametrize("processes", [1, 2])
def test_sigkill_mid_training_then_retry_resumes_and_matches(tmp_path, processes):
    pipeline = _pipeline(tmp_path, processes)
    ref_dir, kill_dir = tmp_path / "ref", tmp_path / "kill"
    ref_dir.mkdir()
    kill_dir.mkdir()

    # The uninterrupted reference run.
    ref = CLI(ref_dir)
    ref("init")
    ref_doc = ref.json("run", str(pipeline), timeout=600)
    assert [j["state"] for j in ref_doc["jobs"]] == ["succeeded", "succeeded"]
    ref_path = ref_doc["models"][0]["path"]

    # The same pipeline, run by a separate worker process whose stage we SIGKILL mid-training.
    cli = CLI(kill_dir)
    cli("init")
    doc = cli.json("run", str(pipeline), "--detach")
    pretrain_job = doc["jobs"][1]["id"]
    db = kill_dir / ".weightsmith" / "weightsmith.db"
    worker = subprocess.Popen(
        [sys.executable, "-m", "weightsmith", "worker", "--poll", "0.2"],
        cwd=kill_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        _kill_stage_after_two_checkpoints(db, pretrain_job)
        assert worker.poll() is None, "the worker must survive its stage being killed"

        cli("jobs", "retry", str(pretrain_job))
        wait_for(
            lambda: query_db(db, "SELECT state FROM jobs WHERE id = ?", pretrain_job)[0][0] == "succeeded",
            what="the retried job to succeed",
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)

    shown = cli.json("jobs", "show", str(pretrain_job))
    killed_run, resumed_run = shown["runs"]
    assert killed_run["status"] == "failed" and killed_run["exit_code"] == -signal.SIGKILL
    resumed_from = resumed_run["result"]["resumed_from_step"]
    assert resumed_from is not None and resumed_from >= 2 * SAVE_STEPS  # it did not start over
    assert resumed_run["result"]["steps"] == MAX_STEPS
    steps = sorted({m["step"] for m in cli.json("jobs", "metrics", str(pretrain_job)) if m["run"] == resumed_run["id"]})
    assert steps[0] > resumed_from  # the global step continued from the checkpoint

    resumed_path = cli.json("models", "show", "resume@v1")["path"]
    ref_weights = load_file(f"{ref_path}/model.safetensors")
    new_weights = load_file(f"{resumed_path}/model.safetensors")
    assert ref_weights.keys() == new_weights.keys()
    for name in ref_weights:
        assert torch.allclose(ref_weights[name], new_weights[name], atol=1e-5), name


def _committed_steps(checkpoints: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*") if (p / COMPLETE_MARKER).is_file())


def test_retry_passes_over_a_damaged_newest_checkpoint_and_says_so(tmp_path):
    """The newest checkpoint's weights truncated after its commit: the retry resumes from the one before,
    with one log line naming it and why, and the LR schedule goes on from there (no warm-up restart);
    with no usable checkpoint left, the retried job fails with one sentence."""
    cli = CLI(tmp_path)
    cli("init")
    pipeline = tiny_pretrain_pipeline(tmp_path / "damaged.yaml", "damaged", max_steps=MAX_STEPS,
                                      save_steps=SAVE_STEPS, keep_checkpoints=2)
    job = cli.json("run", str(pipeline), "--detach")["jobs"][1]["id"]
    db = tmp_path / ".weightsmith" / "weightsmith.db"
    checkpoints = tmp_path / ".weightsmith" / "jobs" / str(job) / "work" / "checkpoints"
    worker = subprocess.Popen([sys.executable, "-m", "weightsmith", "worker", "--poll", "0.2"], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _kill_stage_after_two_checkpoints(db, job)
        previous, newest = _committed_steps(checkpoints)[-2:]
        weights = checkpoints / f"checkpoint-{newest}" / "model.safetensors"
        size = weights.stat().st_size
        with weights.open("r+b") as handle:
            handle.truncate(100)

        cli("jobs", "retry", str(job))
        wait_for(lambda: query_db(db, "SELECT state FROM jobs WHERE id = ?", job)[0][0] == "succeeded",
                 what="the retried job to succeed")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)

    killed_run, resumed_run = cli.json("jobs", "show", str(job))["runs"]
    assert resumed_run["result"]["resumed_from_step"] == previous
    log = Path(resumed_run["log"]).read_text()
    said = [line for line in log.splitlines() if f"resuming from checkpoint-{previous}" in line]
    assert len(said) == 1, log[-3000:]
    assert f"checkpoint-{newest} is unreadable (model.safetensors is 100 bytes, expected {size})" in said[0]
    lrs = {(m["run"], m["step"]): m["value"] for m in cli.json("jobs", "metrics", str(job)) if m["name"] == "lr"}
    first_step = min(step for run, step in lrs if run == resumed_run["id"])
    assert first_step == previous + 1
    # The step after the checkpoint runs at the LR the killed run had there: the schedule went on.
    assert lrs[(resumed_run["id"], first_step)] == pytest.approx(lrs[(killed_run["id"], first_step)], rel=1e-9)


def test_retry_with_no_usable_checkpoint_fails_the_job_with_one_sentence(tmp_path):
    cli = CLI(tmp_path)
    cli("init")
    pipeline = tiny_pretrain_pipeline(tmp_path / "broken.yaml", "broken", max_steps=MAX_STEPS,
                                      save_steps=SAVE_STEPS, keep_checkpoints=2)
    job = cli.json("run", str(pipeline), "--detach")["jobs"][1]["id"]
    db = tmp_path / ".weightsmith" / "weightsmith.db"
    checkpoints = tmp_path / ".weightsmith" / "jobs" / str(job) / "work" / "checkpoints"
    worker = subprocess.Popen([sys.executable, "-m", "weightsmith", "worker", "--poll", "0.2"], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _kill_stage_after_two_checkpoints(db, job)
        committed = _committed_steps(checkpoints)
        for folder in checkpoints.glob("checkpoint-*"):  # a third save the kill cut short would be named instead
            if int(folder.name.split("-")[1]) not in committed:
                shutil.rmtree(folder)
        for step in committed:
            (checkpoints / f"checkpoint-{step}" / "scheduler.pt").unlink()
        cli("jobs", "retry", str(job))
        wait_for(lambda: query_db(db, "SELECT state FROM jobs WHERE id = ? AND attempts = 2", job) == [("failed",)],
                 what="the retried job to fail")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    error = cli.json("jobs", "show", str(job))["error"]
    assert error.startswith(f"error: no usable checkpoint to resume from in {checkpoints}: checkpoint-")
    assert error.endswith("is incomplete (scheduler.pt missing); delete that folder and retry the job to train "
                          "again from step 0.")
    assert "\n" not in error
