"""SFT's loss through the model's logits (the CPU default) against TRL's fused LM head: the same numbers.

:class:`weightsmith.training.lm_head.LogitsLossSFTTrainer` replaces only how the loss and the
``entropy`` / ``mean_token_accuracy`` metrics are computed, so a run with ``fused_lm_head: false``
must log what the same run with ``fused_lm_head: true`` logs, step by step: padding-free and
padded batches, assistant-only labels, and gradient accumulation (the loss divided by the targets
of the whole accumulated step, ``num_items_in_batch``).
"""

from __future__ import annotations

import json

import pytest
from training.training_helpers import run_in_process

# float32: the two compute the same sums in different orders; under bf16 autocast (auto on a CPU with native
# bf16) that order shows at 1e-4.
FAST = {"logging_steps": 1, "save_steps": 1000, "device": "cpu", "dtype": "float32", "batch_size": 4, "max_steps": 3}
METRICS = ("loss", "grad_norm", "entropy", "mean_token_accuracy", "num_tokens")


def logged(base, capsys, data_dir, tiny_model_dir, **config) -> list[dict]:
    inputs = {"data_path": data_dir / "chat.jsonl", "data_format": "chat", "model_path": tiny_model_dir}
    result, _ = run_in_process(base, capsys, "sft", {**FAST, **config}, inputs)
    assert result["steps"] == 3
    rows = [json.loads(line) for line in (base / "metrics.jsonl").read_text().splitlines()]
    return [{key: row[key] for key in METRICS} for row in rows if "loss" in row]


@pytest.mark.parametrize("settings", [
    {},                                              # padding-free, assistant-only labels
    {"grad_accum": 2},                               # num_items_in_batch over two micro-batches
    {"padding_free": False},                         # padded batches with an attention mask
    {"assistant_only_loss": False},                  # every token a target
], ids=["padding-free", "grad-accum", "padded", "all-tokens"])
def test_the_logits_loss_logs_what_the_fused_head_logs(tmp_path, capsys, data_dir, tiny_model_dir, settings):
    fused = logged(tmp_path / "fused", capsys, data_dir, tiny_model_dir, fused_lm_head=True, **settings)
    logits = logged(tmp_path / "logits", capsys, data_dir, tiny_model_dir, fused_lm_head=False, **settings)
    assert len(fused) == len(logits) == 3
    for a, b in zip(fused, logits):
        # Same tokens, same targets, same updates: equal to float tolerance (the fused head sums in tiles).
        assert b == pytest.approx(a, rel=1e-4, abs=1e-6)
    assert fused[0]["loss"] != fused[2]["loss"]  # the steps trained something


def test_the_cpu_default_is_the_logits_loss_and_cuda_keeps_the_fused_head():
    from trl import SFTTrainer

    from weightsmith.training import validate_stage_config
    from weightsmith.training.lm_head import LogitsLossSFTTrainer, sft_trainer_class

    assert validate_stage_config("sft", {}).fused_lm_head is None
    assert sft_trainer_class(None, "cpu") is LogitsLossSFTTrainer
    assert sft_trainer_class(None, "cuda") is SFTTrainer
    assert sft_trainer_class(True, "cpu") is SFTTrainer
    assert sft_trainer_class(False, "cuda") is LogitsLossSFTTrainer
