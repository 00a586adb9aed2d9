"""Mixture-of-experts sizes (``tiny-moe``): pretrain from scratch with the router's load-balancing loss
logged, resume, then CPT, SFT (also from ``model: {init: random}``), DPO, GRPO and an eval on the result.

Every stage runs through the real runner (the pretrain in its own process, as the worker runs it; the
others through its entry point in this process) on the tiny datasets of conftest.py. ``tiny-moe``
routes each token to 2 of 4 experts, so the load-balancing loss is 2 when the routing is balanced
and at most 4 (every token on the same two experts).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from training.training_helpers import (
    StageRun,
    assert_metrics_rows,
    assert_ok,
    assert_plain_model_dir,
    assert_weights_changed,
    load_weights,
    run_in_process,
    run_stage,
    write_spec,
)

from weightsmith.training.models import MODEL_SIZES, ROUTER_AUX_LOSS_COEF

MOE_PRETRAIN = {"max_steps": 6, "save_steps": 3, "logging_steps": 1, "batch_size": 4, "seq_len": 32,
                "size": "tiny-moe", "device": "cpu", "warmup_steps": 0, "keep_checkpoints": 2}
FAST = {"max_steps": 2, "save_steps": 2, "logging_steps": 1, "batch_size": 4, "device": "cpu", "warmup_steps": 0}


def assert_aux_losses(run: StageRun) -> list[dict]:
    """Every metrics row carries the router's load-balancing loss, within its bounds for top-2 of 4 experts."""
    rows = assert_metrics_rows(run, extra_keys={"aux_loss"})
    spec = MODEL_SIZES["tiny-moe"]
    assert all(0.0 < row["aux_loss"] <= spec.num_experts + 1e-4 for row in rows), rows
    return rows


@pytest.fixture(scope="module")
def moe_pretrain(tmp_path_factory, data_dir: Path, tokenizer_dir: Path) -> StageRun:
    run = run_stage(
        tmp_path_factory.mktemp("moe_pretrain"),
        "pretrain",
        MOE_PRETRAIN,
        {"data_path": data_dir / "text.jsonl", "data_format": "text", "tokenizer_path": tokenizer_dir},
    )
    assert_ok(run)
    return run


def test_pretrain_builds_a_mixtral_and_logs_the_router_loss(moe_pretrain: StageRun):
    model, _ = assert_plain_model_dir(moe_pretrain.output_dir)
    assert type(model).__name__ == "MixtralForCausalLM"
    config = json.loads((moe_pretrain.output_dir / "config.json").read_text())
    assert (config["num_local_experts"], config["num_experts_per_tok"]) == (4, 2)
    assert config["router_aux_loss_coef"] == ROUTER_AUX_LOSS_COEF
    assert config["output_router_logits"] is False  # inference never computes the router's loss
    rows = assert_aux_losses(moe_pretrain)
    assert len(rows) == 6 and rows[-1]["loss"] < rows[0]["loss"]
    # The Trainer's history (the checkpoint's trainer_state.json) carries it too.
    state = json.loads(next(moe_pretrain.work_dir.glob("checkpoints/checkpoint-6/trainer_state.json")).read_text())
    assert [entry["aux_loss"] for entry in state["log_history"] if "loss" in entry] == [r["aux_loss"] for r in rows]


def test_the_logged_loss_adds_the_weighted_router_loss_once_per_step(tmp_path: Path, tokenizer_dir: Path):
    """With gradient accumulation the model's token-normalized loss is not divided by the steps, so the
    router term is rescaled to count once per optimizer step (and once per rank)."""
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainingArguments

    from weightsmith.data.packing import collate_packed_blocks
    from weightsmith.training.models import build_model
    from weightsmith.training.moe import RouterLossTrainer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    model = build_model("tiny-moe", tokenizer, max_positions=64)
    blocks = torch.randint(4, len(tokenizer), (4, 16))
    args = TrainingArguments(output_dir=str(tmp_path), gradient_accumulation_steps=2, use_cpu=True, report_to="none")
    trainer = RouterLossTrainer(model=model, args=args, train_dataset=Dataset.from_dict({"input_ids": blocks.tolist()}),
                                data_collator=collate_packed_blocks)
    batch = collate_packed_blocks([{"input_ids": row} for row in blocks.tolist()])
    trainer.current_gradient_accumulation_steps = 2  # what the training loop sets at each step
    model.train()
    n_tokens = batch["labels"][:, 1:].numel() * 2  # the two micro-batches' tokens
    loss, outputs = trainer.compute_loss(model, dict(batch), return_outputs=True, num_items_in_batch=n_tokens)
    with torch.no_grad():
        plain = model(input_ids=batch["input_ids"], labels=batch["labels"], num_items_in_batch=n_tokens)
    assert plain.aux_loss is None  # the saved config never computes it
    assert 0.0 < outputs.aux_loss.item() <= 4.0 + 1e-5
    assert loss.item() == pytest.approx(plain.loss.item() + ROUTER_AUX_LOSS_COEF * outputs.aux_loss.item() / 2, rel=1e-5)
    assert trainer._aux_losses == [pytest.approx(outputs.aux_loss.item())]


def test_a_killed_moe_pretrain_resumes_to_the_same_weights(tmp_path: Path, capsys, moe_pretrain: StageRun):
    """The run as it was when its first checkpoint was committed, rerun with the same spec. (transformers'
    Trainer alone would resume the experts and the router from their initial weights.)"""
    work = tmp_path / "work"
    shutil.copytree(moe_pretrain.work_dir, work)
    shutil.rmtree(work / "checkpoints" / "checkpoint-6")
    lines = moe_pretrain.metrics_path.read_text().splitlines()
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines[:4]) + "\n")  # the kill came during step 5
    spec = json.loads(moe_pretrain.spec_path.read_text())
    result, _ = run_in_process(tmp_path, capsys, "pretrain", spec["config"], spec["inputs"])
    assert result["resumed_from_step"] == 3 and result["steps"] == 6
    run = StageRun(None, tmp_path)
    resumed, uninterrupted = load_weights(run.output_dir), load_weights(moe_pretrain.output_dir)
    assert all(torch.allclose(resumed[name], uninterrupted[name], atol=1e-6) for name in uninterrupted)
    rows = assert_aux_losses(run)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["aux_loss"] for r in rows[4:]] == pytest.approx([r["aux_loss"] for r in moe_pretrain.metrics()[4:]])


def test_cpt_continues_the_moe_model_with_its_router_loss(tmp_path: Path, capsys, data_dir: Path, moe_pretrain):
    result, _ = run_in_process(
        tmp_path,
        capsys,
        "cpt",
        {**FAST, "seq_len": 32, "lr": 1e-3},
        {"data_path": data_dir / "text.jsonl", "data_format": "text", "model_path": moe_pretrain.output_dir},
    )
    run = StageRun(None, tmp_path)
    assert result["steps"] == 2 and len(assert_aux_losses(run)) == 2
    assert_weights_changed(moe_pretrain.output_dir, run.output_dir)


@pytest.fixture(scope="module")
def moe_sft(tmp_path_factory, data_dir: Path, moe_pretrain: StageRun) -> StageRun:
    """SFT of the pretrained MoE, through the runner's entry point in this process (no interpreter start)."""
    from weightsmith.training.runner import main

    base = tmp_path_factory.mktemp("moe_sft")
    spec = write_spec(base, "sft", {**FAST, "max_steps": 3, "lr": 1e-3, "max_length": 96},
                      {"data_path": data_dir / "chat.jsonl", "data_format": "chat", "model_path": moe_pretrain.output_dir})
    assert main([str(spec)]) == 0
    return StageRun(None, base)


def test_sft_on_the_moe_model_trains_its_router_and_saves_an_inference_config(moe_sft: StageRun, moe_pretrain):
    model, _ = assert_plain_model_dir(moe_sft.output_dir)
    assert type(model).__name__ == "MixtralForCausalLM"
    assert_weights_changed(moe_pretrain.output_dir, moe_sft.output_dir)
    before, after = load_weights(moe_pretrain.output_dir), load_weights(moe_sft.output_dir)
    router = "model.layers.0.block_sparse_moe.gate.weight"  # the file keeps Mixtral's original names
    assert not torch.equal(before[router], after[router])
    assert_aux_losses(moe_sft)  # TRL's SFTTrainer logs it
    # TRL turned output_router_logits on to train; the saved model has it off again.
    assert json.loads((moe_sft.output_dir / "config.json").read_text())["output_router_logits"] is False


def test_sft_from_a_random_tiny_moe_init(tmp_path: Path, capsys, data_dir: Path, tokenizer_dir: Path):
    result, _ = run_in_process(
        tmp_path,
        capsys,
        "sft",
        {**FAST, "lr": 1e-3, "max_length": 96},
        {"data_path": data_dir / "chat.jsonl", "data_format": "chat", "tokenizer_path": tokenizer_dir,
         "model_init": {"init": "random", "size": "tiny-moe"}},
    )
    assert result["steps"] == 2
    run = StageRun(None, tmp_path)
    model, _ = assert_plain_model_dir(run.output_dir)
    assert type(model).__name__ == "MixtralForCausalLM" and model.config.num_local_experts == 4
    assert_aux_losses(run)


def test_dpo_on_the_moe_model(tmp_path: Path, capsys, data_dir: Path, moe_sft: StageRun):
    run_in_process(
        tmp_path,
        capsys,
        "dpo",
        {**FAST, "lr": 1e-3, "max_length": 64},
        {"data_path": data_dir / "preference.jsonl", "data_format": "preference", "model_path": moe_sft.output_dir},
    )
    run = StageRun(None, tmp_path)
    assert_plain_model_dir(run.output_dir)
    assert_weights_changed(moe_sft.output_dir, run.output_dir)
    rows = assert_aux_losses(run)
    # Policy == reference at step 1: the DPO term is log(2), plus the weighted router loss.
    assert rows[0]["loss"] == pytest.approx(math.log(2) + ROUTER_AUX_LOSS_COEF * rows[0]["aux_loss"], abs=1e-3)


def test_grpo_on_the_moe_model(tmp_path: Path, capsys, data_dir: Path, moe_sft: StageRun):
    result, _ = run_in_process(
        tmp_path,
        capsys,
        "grpo",
        {**FAST, "lr": 1e-3, "reward": ["exact_match"], "num_generations": 4, "max_completion_length": 8},
        {"data_path": data_dir / "prompt.jsonl", "data_format": "prompt", "model_path": moe_sft.output_dir},
    )
    run = StageRun(None, tmp_path)
    assert_plain_model_dir(run.output_dir)
    assert_weights_changed(moe_sft.output_dir, run.output_dir)
    assert_aux_losses(run)  # TRL's GRPOTrainer logs it beside the rewards
    assert "reward" in run.metrics()[0] and result["steps"] == 2


def test_eval_of_the_moe_model(tmp_path: Path, data_dir: Path, moe_sft: StageRun):
    """A KPI suite runs on the MoE model (generation and perplexity, in padded batches); the perplexity
    is exp of the model's own LM loss on each text, alone."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from weightsmith.evals.run import run_suite
    from weightsmith.workspace import Workspace

    ws = Workspace.init(tmp_path / "ws")
    chats = [json.loads(line)["messages"] for line in (data_dir / "chat.jsonl").read_text().splitlines()[:3]]
    held = [{"prompt": m[:2], "answer": m[2]["content"]} for m in chats]
    (tmp_path / "held.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held))
    docs = [{"text": m[2]["content"]} for m in chats]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in docs))
    suite = {"name": "moe", "generation": {"max_new_tokens": 8, "batch_size": 2}, "kpis": {
        "exact": {"path": str(tmp_path / "held.jsonl"), "format": "prompt", "metric": "exact_match"},
        "ppl": {"path": str(tmp_path / "docs.jsonl"), "format": "text", "metric": "perplexity"}}}
    doc = run_suite(ws, suite, str(moe_sft.output_dir), device="cpu")
    assert doc["kpis"]["exact"]["n"] == 3 and 0.0 <= doc["kpis"]["exact"]["value"] <= 1.0

    tokenizer = AutoTokenizer.from_pretrained(moe_sft.output_dir)
    model = AutoModelForCausalLM.from_pretrained(moe_sft.output_dir).eval()
    nll = tokens = 0.0
    with torch.no_grad():
        for row in docs:
            ids = torch.tensor([tokenizer(row["text"])["input_ids"]])
            n = ids.shape[1] - 1
            nll += model(input_ids=ids, labels=ids).loss.item() * n
            tokens += n
    assert doc["kpis"]["ppl"]["value"] == pytest.approx(math.exp(nll / tokens), rel=1e-3)


def test_a_pipeline_names_the_moe_sizes(tmp_path: Path):
    """``size: tiny-moe`` of a pretrain stage, ``model: {init: random, size: small-moe}``; a misspelt size is refused."""
    import yaml

    from weightsmith.config import load_pipeline
    from weightsmith.errors import UserError

    pipeline = {
        "name": "moe",
        "datasets": {"docs": {"path": str(tmp_path / "docs.jsonl"), "format": "text"},
                     "tasks": {"path": str(tmp_path / "tasks.jsonl"), "format": "chat"}},
        "stages": {
            "tokenizer": {"data": "docs"},
            "pretrain": {"data": "docs", "tokenizer": "tokenizer", "size": "tiny-moe"},
            "sft": {"data": "tasks", "model": {"init": "random", "size": "small-moe", "tokenizer": "tokenizer"}},
        },
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    spec = load_pipeline(path)
    stages = {stage.name: stage for stage in spec.stages}
    assert stages["pretrain"].config["size"] == "tiny-moe"
    assert stages["sft"].model_init == {"init": "random", "size": "small-moe"}
    with pytest.raises(UserError, match="tiny-moe"):
        load_pipeline(path, ["pretrain.size=tiny-mo"])


@pytest.mark.slow
def test_a_moe_pipeline_stores_the_router_loss_in_the_jobs_metrics(tmp_path: Path):
    """tokenizer -> pretrain (size: tiny-moe) through the real worker: the job's metric history has aux_loss
    at every logged step beside loss, and the version is a Mixtral."""
    import yaml

    from helpers import EXAMPLES
    from weightsmith.config import load_pipeline
    from weightsmith.jobs.pipeline import run_inline, submit_pipeline
    from weightsmith.jobs.queue import job_metrics
    from weightsmith.workspace import Workspace
    from weightsmith.workspace.registry import show_version

    Workspace.init(tmp_path)
    ws = Workspace.open(tmp_path)
    raw = {"name": "moe", "datasets": {"docs": {"path": str(EXAMPLES / "tiny" / "data" / "docs"), "format": "text"}},
           "defaults": {"device": "cpu", "logging_steps": 1},
           "stages": {"tokenizer": {"data": "docs", "vocab_size": 320, "min_frequency": 1},
                      "pretrain": {"data": "docs", "tokenizer": "tokenizer", "size": "tiny-moe", "seq_len": 32,
                                   "max_steps": 3, "batch_size": 4}}}
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OMP_NUM_THREADS", "1")  # the worker's stage processes inherit it
        done = run_inline(ws, submit_pipeline(ws, load_pipeline(path)))
    assert [(job["stage"], job["state"]) for job in done["jobs"]] == [("tokenizer", "succeeded"), ("pretrain", "succeeded")]
    rows = job_metrics(ws, done["jobs"][1]["id"])
    steps = {name: [r["step"] for r in rows if r["name"] == name] for name in ("loss", "aux_loss")}
    assert steps["loss"] == steps["aux_loss"] == [1, 2, 3]
    assert all(0.0 < r["value"] <= 4.0 for r in rows if r["name"] == "aux_loss")
    version = show_version(ws, done["models"][0]["ref"])
    assert json.loads((Path(version["path"]) / "config.json").read_text())["model_type"] == "mixtral"
