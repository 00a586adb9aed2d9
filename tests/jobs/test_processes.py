"""A stage with ``processes: 2`` runs data-parallel under torchrun (gloo on the CPU) and trains the
model one process would train with the same global batch; rank 0 alone writes what the job reads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file

from helpers import CLI, query_db, tiny_pretrain_pipeline, wait_for

STEPS = 6


def _pipeline(tmp_path):
    return tiny_pretrain_pipeline(tmp_path / "dp.yaml", "dp", max_steps=STEPS)


def _workspace(tmp_path, name):
    cli = CLI(tmp_path / name)
    cli.cwd.mkdir()
    cli("init")
    return cli


def test_two_processes_train_what_one_trains_with_the_same_global_batch(tmp_path):
    pipeline = _pipeline(tmp_path)
    one, two = _workspace(tmp_path, "one"), _workspace(tmp_path, "two")
    # float32: under bf16 autocast (auto on a CPU with native bf16) the two reduce in other orders, and the saved
    # bf16 weights then differ by an ulp.
    one_doc = one.json("run", str(pipeline), "stages.pretrain.dtype=float32")
    # Two ranks of 2 sequences each: the same 4 sequences a step as one process with batch_size 4.
    two_doc = two.json("run", str(pipeline), "stages.pretrain.processes=2", "stages.pretrain.batch_size=2",
                       "stages.pretrain.dtype=float32")

    results = {}
    for name, cli, doc in (("one", one, one_doc), ("two", two, two_doc)):
        assert [j["state"] for j in doc["jobs"]] == ["succeeded", "succeeded"], doc["jobs"]
        job = doc["jobs"][1]["id"]
        shown = cli.json("jobs", "show", str(job))
        results[name] = shown["runs"][-1]["result"]
        losses = [m for m in cli.json("jobs", "metrics", str(job)) if m["name"] == "loss"]
        assert [m["step"] for m in losses] == list(range(1, STEPS + 1))  # one row a step: rank 0 writes alone
    assert results["one"]["processes"] == 1 and results["two"]["processes"] == 2
    assert results["two"]["train_tokens"] == results["one"]["train_tokens"] == STEPS * 4 * 32  # counted over ranks

    weights = [load_file(f"{doc['models'][0]['path']}/model.safetensors") for doc in (one_doc, two_doc)]
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        assert (weights[0][name] - weights[1][name]).abs().max() < 1e-5, name


def test_a_rank_that_refuses_its_input_fails_the_job_with_its_sentence(tmp_path):
    cli = _workspace(tmp_path, "ws")
    proc = cli("run", str(_pipeline(tmp_path)), "stages.pretrain.processes=2", "stages.pretrain.seq_len=60000",
               "--json", check=False)
    assert proc.returncode == 1
    jobs = json.loads(proc.stdout)["jobs"]
    assert jobs[1]["state"] == "failed"
    assert jobs[1]["error"].startswith("error: stage 'pretrain': the dataset has ")
    assert jobs[1]["error"].endswith("fewer than one block of seq_len=60000; add text or lower seq_len.")


def _ranks(launcher_pid: int) -> list[int]:
    """The launcher's children: one process a rank (Linux /proc)."""
    try:
        return [int(pid) for pid in Path(f"/proc/{launcher_pid}/task/{launcher_pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


def test_a_killed_rank_fails_the_job_by_its_signal_and_no_rank_outlives_the_worker(tmp_path):
    cli = _workspace(tmp_path, "ws")
    pipeline = tiny_pretrain_pipeline(tmp_path / "long.yaml", "dp", max_steps=100_000, save_steps=100_000,
                                      processes=2, batch_size=2)
    job = cli.json("run", str(pipeline), "--detach")["jobs"][1]["id"]
    db = cli.cwd / ".weightsmith" / "weightsmith.db"

    def training_ranks():
        rows = query_db(db, "SELECT r.pid FROM runs r WHERE r.job_id = ? AND r.status = 'running' AND r.pid IS NOT "
                        "NULL AND EXISTS (SELECT 1 FROM run_metrics m WHERE m.run_id = r.id)", job)
        ranks = _ranks(rows[-1][0]) if rows else []
        return ranks if len(ranks) == 2 else None

    worker = subprocess.Popen([sys.executable, "-m", "weightsmith", "worker", "--poll", "0.2"], cwd=cli.cwd,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ranks = wait_for(training_ranks, what="two ranks training")
        os.kill(ranks[1], signal.SIGKILL)
        wait_for(lambda: query_db(db, "SELECT state FROM jobs WHERE id = ?", job)[0][0] == "failed",
                 what="the job to fail")
        assert query_db(db, "SELECT error FROM jobs WHERE id = ?", job)[0][0] == "stage process killed by signal 9"
        wait_for(lambda: not any(_alive(pid) for pid in ranks), timeout=30, what="the other rank to stop")

        cli("jobs", "retry", str(job))
        ranks = wait_for(training_ranks, what="two ranks training again")
    finally:
        worker.kill()  # no SIGTERM, no cleanup: the worker just dies
        worker.wait(timeout=60)
    wait_for(lambda: not any(_alive(pid) for pid in ranks), timeout=30, what="the ranks to die with the worker")
