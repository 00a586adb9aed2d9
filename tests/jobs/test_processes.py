"""A stage with ``processes: 2`` runs data-parallel under torchrun (gloo on the CPU) and trains the
model one process would train with the same global batch; rank 0 alone writes what the job reads."""

from __future__ import annotations

import json

from safetensors.torch import load_file

from helpers import CLI, tiny_pretrain_pipeline

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
    one_doc = one.json("run", str(pipeline))
    # Two ranks of 2 sequences each: the same 4 sequences a step as one process with batch_size 4.
    two_doc = two.json("run", str(pipeline), "stages.pretrain.processes=2", "stages.pretrain.batch_size=2")

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
