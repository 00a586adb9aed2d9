"""The whole lifecycle through the real CLI: examples/tiny runs tokenizer → … → grpo as jobs.

One pipeline run (module scope, ~1-2 minutes) backs the recipe checks: every stage
registered a model version with lineage, its loss was finite, its weights changed from its
parent's, and the output opens with ``from_pretrained``.
"""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file

from helpers import CLI, EXAMPLES

STAGES = ["pretrain", "cpt", "sft", "dpo", "grpo"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    cli = CLI(root)
    cli("init")
    doc = cli.json("run", str(EXAMPLES / "tiny" / "pipeline.yaml"), timeout=900)
    return cli, doc


def test_every_stage_succeeds_and_registers_a_version(tiny_run):
    cli, doc = tiny_run
    assert [j["state"] for j in doc["jobs"]] == ["succeeded"] * 8, doc["jobs"]
    assert [j["kind"] for j in doc["jobs"]][-2:] == ["gate", "promote"]
    versions = cli.json("models", "list")
    assert [(v["name"], v["version"], v["stage"]) for v in versions] == [
        ("dispatch", i + 1, stage) for i, stage in enumerate(STAGES)
    ]
    for v in versions:
        assert {"name", "version", "path", "parent", "run"} <= set(v)
    parents = [v["parent"] for v in versions]
    assert parents == [None, "dispatch@v1", "dispatch@v2", "dispatch@v3", "dispatch@v4"]
    assert versions[2]["data"] == ["tasks@v1"] and versions[3]["data"] == ["prefs@v1"]


def test_outputs_load_and_weights_changed(tiny_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cli, _ = tiny_run
    versions = cli.json("models", "list")
    previous = None
    for v in versions:
        model = AutoModelForCausalLM.from_pretrained(v["path"])
        tokenizer = AutoTokenizer.from_pretrained(v["path"])
        assert model.config.eos_token_id == tokenizer.eos_token_id
        weights = load_file(f"{v['path']}/model.safetensors")
        if previous is not None:
            changed = [k for k in weights if k in previous and not torch.equal(weights[k], previous[k])]
            assert changed, f"{v['ref']} has the same weights as its parent"
        previous = weights


def test_losses_finite_and_metrics_recorded(tiny_run):
    cli, doc = tiny_run
    for job in doc["jobs"]:
        if job["kind"] in ("tokenizer", "gate", "promote"):
            continue
        shown = cli.json("jobs", "show", str(job["id"]))
        run = shown["runs"][-1]
        loss = run["result"]["final_loss"]
        assert loss is not None and math.isfinite(loss), (job["stage"], run["result"])
        metrics = cli.json("jobs", "metrics", str(job["id"]))
        names = {m["name"] for m in metrics}
        assert "loss" in names and "lr" in names, (job["stage"], names)
        if job["kind"] == "grpo":
            assert any("reward" in n for n in names), names
    logs = cli.json("jobs", "logs", str(doc["jobs"][1]["id"]))
    assert logs["text"].startswith("==> run 1 <==\n") and logs["done"] and logs["state"] == "succeeded"
    assert logs["next_offset"] == len(logs["text"].encode())


def test_models_show_prints_lineage(tiny_run):
    cli, _ = tiny_run
    shown = cli.json("models", "show", "dispatch@v5")
    assert [n["stage"] for n in shown["lineage"]] == ["grpo", "dpo", "sft", "cpt", "pretrain"]
    assert shown["lineage"][0]["data"] == ["prompts@v1"]
    text = cli("models", "show", "dispatch@v5").stdout
    for ref in ("dispatch@v5", "dispatch@v1", "prompts@v1", "docs@v1"):
        assert ref in text


def test_pipeline_gates_and_promotes_the_final_model(tiny_run):
    cli, doc = tiny_run
    champion = cli.json("models", "show", "dispatch@champion")
    assert champion["ref"] == "dispatch@v5"
    gate_job = cli.json("jobs", "show", str(doc["jobs"][-2]["id"]))
    verdict = gate_job["runs"][-1]["result"]
    assert verdict["passed"] is True and verdict["candidate"] == "dispatch@v5"
    assert verdict["rules"] and all(rule["passed"] for rule in verdict["rules"])


def test_idempotent_resubmission_returns_the_same_jobs(tiny_run, tmp_path):
    cli, _ = tiny_run
    first = cli.json("run", str(EXAMPLES / "tiny" / "pipeline.yaml"), "--detach", "--idempotency-key", "abc")
    again = cli.json("run", str(EXAMPLES / "tiny" / "pipeline.yaml"), "--detach", "--idempotency-key", "abc")
    assert [j["id"] for j in first["jobs"]] == [j["id"] for j in again["jobs"]]
    # Cancelling the first stage cancels everything that waits on it.
    cli("jobs", "cancel", str(first["jobs"][0]["id"]))
    states = {j["id"]: j["state"] for j in cli.json("jobs", "list")}
    assert all(states[j["id"]] == "cancelled" for j in first["jobs"])


def _copy_example(tmp_path):
    shutil.copytree(EXAMPLES / "tiny", tmp_path / "tiny")
    return tmp_path / "tiny" / "pipeline.yaml"


def test_stage_naming_a_dataset_of_the_wrong_format_is_refused(cli, tmp_path):
    pipeline = _copy_example(tmp_path)
    proc = cli("run", str(pipeline), "stages.sft.data=prefs", check=False)
    assert proc.returncode == 2
    assert "stages.sft.data" in proc.stderr and "preference data" in proc.stderr and "chat" in proc.stderr
    assert cli.json("jobs", "list") == [] and cli.json("data", "list") == []  # nothing half-written


def test_model_path_that_is_not_a_model_is_refused(cli, tmp_path):
    pipeline = _copy_example(tmp_path)
    not_a_model = tmp_path / "empty"
    not_a_model.mkdir()
    proc = cli("run", str(pipeline), f"stages.cpt.model={not_a_model}", check=False)
    assert proc.returncode == 2 and "is not a model directory" in proc.stderr
    assert cli.json("jobs", "list") == [] and cli.json("data", "list") == []


def test_bad_data_line_in_a_pipeline_dataset_is_refused(cli, tmp_path):
    pipeline = _copy_example(tmp_path)
    with open(pipeline.parent / "data" / "tasks.jsonl", "a") as fh:
        fh.write('{"messages": [{"role": "user", "content": "no answer"}]}\n')
    proc = cli("run", str(pipeline), check=False)
    assert proc.returncode == 2 and "tasks.jsonl:19:" in proc.stderr
    assert cli.json("jobs", "list") == [] and cli.json("data", "list") == []


def test_gate_stage_with_a_missing_suite_is_refused_before_anything_is_queued(cli, tmp_path):
    pipeline = _copy_example(tmp_path)
    proc = cli("run", str(pipeline), "stages.gate.suite=nope.yaml", check=False)
    assert proc.returncode == 2 and "stages.gate.suite" in proc.stderr and "does not exist" in proc.stderr
    assert cli.json("jobs", "list") == [] and cli.json("data", "list") == []


def test_unknown_pipeline_key_suggests_closest(cli, tmp_path):
    pipeline = _copy_example(tmp_path)
    proc = cli("run", str(pipeline), "sft.max_step=3", check=False)
    assert proc.returncode == 2 and "did you mean 'max_steps'" in proc.stderr
    assert "Traceback" not in proc.stderr
