"""Every stage, a few steps each, through the real runner subprocess on tiny data and a tiny model."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from training.training_helpers import (
    StageRun,
    assert_metrics_rows,
    assert_ok,
    assert_plain_model_dir,
    assert_weights_changed,
    load_weights,
    runner_env,
    run_stage,
)

# Few steps, a checkpoint on the way, a metrics row per step.
FAST = {"max_steps": 4, "save_steps": 2, "logging_steps": 1, "batch_size": 4, "device": "cpu", "warmup_steps": 0}


def test_tokenizer_stage_writes_a_tokenizer_dir(tmp_path: Path, data_dir: Path):
    from transformers import AutoTokenizer

    run = run_stage(
        tmp_path,
        "tokenizer",
        {"vocab_size": 300, "min_frequency": 1},
        {"data_path": data_dir / "text.jsonl", "data_format": "text"},
    )
    assert_ok(run)
    tokenizer = AutoTokenizer.from_pretrained(run.output_dir)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|pad|>"
    assert "{% generation %}" in tokenizer.chat_template or "{%- generation %}" in tokenizer.chat_template
    result = run.result()
    assert result["kind"] == "tokenizer" and result["output_dir"] == str(run.output_dir)
    assert result["train_tokens"] > 0 and result["vocab_size"] == len(tokenizer)


def test_pretrain_from_scratch_learns_and_saves_a_model(pretrain_run: StageRun):
    run = pretrain_run
    assert_ok(run)
    model, tokenizer = assert_plain_model_dir(run.output_dir)
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    assert model.config.vocab_size == len(tokenizer)
    rows = assert_metrics_rows(run)
    assert [row["step"] for row in rows] == list(range(5, 61, 5))
    assert rows[-1]["loss"] < rows[0]["loss"] - 1.0
    result = run.result()
    assert result["steps"] == 60 and result["resumed_from_step"] is None
    assert math.isfinite(result["final_loss"]) and result["final_loss"] == rows[-1]["loss"]
    # Token count: whole epochs of all packed blocks, then full batches of 4 blocks of 32 tokens.
    blocks, batch, seq_len = result["train_blocks"], 4, 32
    steps_per_epoch = -(-blocks // batch)
    epochs, rest = divmod(60, steps_per_epoch)
    assert result["train_tokens"] == epochs * blocks * seq_len + rest * batch * seq_len


def test_cpt_continues_an_existing_model(tmp_path: Path, data_dir: Path, tiny_model_dir: Path):
    run = run_stage(
        tmp_path,
        "cpt",
        {**FAST, "seq_len": 32, "lr": 1e-3},
        {"data_path": data_dir / "text.jsonl", "data_format": "text", "model_path": tiny_model_dir},
    )
    assert_ok(run)
    assert_plain_model_dir(run.output_dir)
    assert_weights_changed(tiny_model_dir, run.output_dir)
    assert_metrics_rows(run)
    assert run.result()["steps"] == 4


@pytest.mark.parametrize("lora", [None, {"r": 4, "alpha": 8, "dropout": 0.0}], ids=["full", "lora"])
def test_sft_trains_on_chats_and_saves_a_plain_model(tmp_path: Path, data_dir: Path, tiny_model_dir: Path, lora):
    run = run_stage(
        tmp_path,
        "sft",
        {**FAST, "lr": 1e-2 if lora else 1e-3, "max_length": 96, "lora": lora},
        {"data_path": data_dir / "chat.jsonl", "data_format": "chat", "model_path": tiny_model_dir},
    )
    assert_ok(run)
    model, _ = assert_plain_model_dir(run.output_dir)
    # LoRA is merged: a plain Llama whose tensors are the base's, moved.
    assert type(model).__name__ == "LlamaForCausalLM"
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert_weights_changed(tiny_model_dir, run.output_dir)
    assert_metrics_rows(run)
    assert run.result()["lora"] is (lora is not None)


def test_padding_free_sft_is_the_padded_loss_without_the_padding(
    tmp_path: Path, data_dir: Path, tiny_model_dir: Path
):
    """Each batch concatenated into one row with per-conversation positions: attention must stay
    inside each conversation, so every step's loss (and so the trained weights) match padding."""
    import torch

    runs = {
        padding_free: run_stage(
            tmp_path / str(padding_free),
            "sft",
            # Every chat is cut here (on purpose): accept it.
            # float32: the same sums over other shapes differ at 1e-4 under bf16 autocast (auto on a bf16 CPU).
            {**FAST, "max_steps": 3, "lr": 1e-3, "max_length": 70, "padding_free": padding_free,
             "max_truncated_fraction": 1.0, "dtype": "float32"},
            {"data_path": data_dir / "chat.jsonl", "data_format": "chat", "model_path": tiny_model_dir},
        )
        for padding_free in (True, False)
    }
    for run in runs.values():
        assert_ok(run)
    losses = {k: [row["loss"] for row in run.metrics()] for k, run in runs.items()}
    assert len(losses[True]) == 3
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)
    # max_length still truncates: the chats here are 82 to 87 tokens long, cut to 70.
    tokens = runs[True].result()["train_tokens"]
    assert tokens == runs[False].result()["train_tokens"] and tokens <= 3 * 4 * 70
    padded, free = (load_weights(runs[k].output_dir) for k in (False, True))
    assert all(torch.allclose(padded[name], free[name], atol=1e-5) for name in padded)


def test_dpo_against_the_frozen_input_model(tmp_path: Path, data_dir: Path, tiny_model_dir: Path):
    run = run_stage(
        tmp_path,
        "dpo",
        {**FAST, "lr": 1e-3, "max_length": 64},
        {"data_path": data_dir / "preference.jsonl", "data_format": "preference", "model_path": tiny_model_dir},
    )
    assert_ok(run)
    assert_plain_model_dir(run.output_dir)
    assert_weights_changed(tiny_model_dir, run.output_dir)
    rows = assert_metrics_rows(run, extra_keys={"rewards/margins", "rewards/accuracies"})
    # The reference is the input model, so the first step's policy equals it: zero margin, loss log(2).
    assert rows[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-4)
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-3)


def test_dpo_with_sft_weight_adds_the_chosen_nll(tmp_path: Path, data_dir: Path, tiny_model_dir: Path):
    run = run_stage(
        tmp_path,
        "dpo",
        {**FAST, "max_steps": 1, "logging_steps": 1, "lr": 1e-3, "max_length": 64, "sft_weight": 1.0},
        {"data_path": data_dir / "preference.jsonl", "data_format": "preference", "model_path": tiny_model_dir},
    )
    assert_ok(run)
    rows = assert_metrics_rows(run, extra_keys={"rewards/margins"})
    # Policy == reference at step 1: the DPO term is log(2); the chosen answers' NLL comes on top.
    assert rows[0]["loss"] > math.log(2) + 0.5
    args = run.trainer_args()  # what TRL ran with
    assert (args["loss_type"], args["loss_weights"], args["beta"]) == (["sigmoid", "sft"], [1.0, 1.0], 0.1)
    assert args["hub_token"] == "<HUB_TOKEN>" and "pad_token" in args and args["pad_token"] != "<PAD_TOKEN>"


def test_grpo_with_registered_and_user_rewards(
    tmp_path: Path, data_dir: Path, tiny_model_dir: Path, reward_module_dir: Path
):
    run = run_stage(
        tmp_path,
        "grpo",
        {
            **FAST,
            "max_steps": 2,
            "lr": 1e-3,
            "reward": ["exact_match", "length_rewards:longer_is_better"],
            "num_generations": 4,
            "max_completion_length": 8,
            "scale_rewards": "batch",  # passed through to TRL
        },
        {"data_path": data_dir / "prompt.jsonl", "data_format": "prompt", "model_path": tiny_model_dir},
        env=runner_env(extra_pythonpath=reward_module_dir),
    )
    assert_ok(run)
    assert_plain_model_dir(run.output_dir)
    assert_weights_changed(tiny_model_dir, run.output_dir)
    assert_metrics_rows(
        run, extra_keys={"reward", "rewards/exact_match/mean", "rewards/longer_is_better/mean"}
    )
    result = run.result()
    assert result["rewards"] == ["exact_match", "length_rewards:longer_is_better"]
    args = run.trainer_args()  # what TRL ran with: each config key reached it
    assert (args["scale_rewards"], args["num_generations"], args["max_completion_length"]) == ("batch", 4, 8)
    assert (args["learning_rate"], args["max_steps"], args["beta"]) == (1e-3, 2, 0.0)
    assert result["train_tokens"] > 0
