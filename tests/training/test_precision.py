"""Precision and memory settings of the training stages: ``dtype``, ``activation_checkpointing``, ``optim``.

``dtype: auto`` trains in bf16 on a CPU with native bf16 matrix instructions and in fp32 on one without;
bf16 is mixed precision through the trainer's own ``bf16`` setting, allowed on any CPU when asked for (a
tiny model and two steps: emulated bf16 is slow); float16 on the CPU is refused before any compute. The saved model's weights are in the trained dtype and its
``config.json`` says so. Activation (gradient) checkpointing recomputes the forward in backward and must
give the loss it gives without. ``optim`` names one of transformers' optimizers; bitsandbytes' 8-bit and
paged ones are refused on the CPU before any compute.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from training.training_helpers import refusal, run_in_process, stage_context

from weightsmith.errors import UserError
from weightsmith.training import validate_stage_config

FAST = {"logging_steps": 1, "save_steps": 1000, "device": "cpu", "batch_size": 4, "max_steps": 2}


def chat_inputs(data_dir, tiny_model_dir) -> dict:
    return {"data_path": data_dir / "chat.jsonl", "data_format": "chat", "model_path": tiny_model_dir}


def saved_dtypes(model_dir) -> set[torch.dtype]:
    from safetensors.torch import load_file

    return {tensor.dtype for tensor in load_file(str(model_dir / "model.safetensors")).values()}


def test_auto_is_bf16_on_a_cpu_with_native_bf16_and_fp32_on_one_without(monkeypatch):
    from weightsmith.training import common
    from weightsmith.training.common import Precision, resolve_precision

    native = common.cpu_has_fast_bf16()
    assert resolve_precision("cpu", "auto") == Precision(use_cpu=True, bf16=native, fp16=False)
    assert resolve_precision("cpu", "bfloat16") == Precision(use_cpu=True, bf16=True, fp16=False)
    assert resolve_precision("cpu", "float32").dtype == "float32"
    if not torch.cuda.is_available():  # this machine: auto resolves to the CPU
        assert resolve_precision("auto", "auto") == Precision(use_cpu=True, bf16=native, fp16=False)
    for kind in ("pretrain", "cpt", "sft", "dpo", "grpo"):
        assert validate_stage_config(kind, {}).dtype == "auto"
    # The other kind of CPU than this one (the detection is cached, so replace it):
    monkeypatch.setattr(common, "cpu_has_fast_bf16", lambda: not native)
    assert resolve_precision("cpu", "auto").bf16 is (not native)
    assert resolve_precision("cpu", "float32").bf16 is False


def test_native_bf16_is_what_the_cpu_says_it_has():
    from weightsmith.training.common import cpu_has_fast_bf16

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo to compare with")
    flags = set(cpuinfo.read_text().split())
    assert cpu_has_fast_bf16() == bool(flags & {"avx512_bf16", "amx_bf16", "amx_tile"})


def test_float16_on_the_cpu_is_refused_in_one_sentence(tmp_path, capsys, data_dir, tiny_model_dir):
    # Named with device: cpu, the YAML is refused when it is validated...
    with pytest.raises(UserError, match=r"'dtype': float16 needs a CUDA GPU \(fp16 mixed .* use dtype: bfloat16"):
        validate_stage_config("dpo", {"device": "cpu", "dtype": "float16"})
    with pytest.raises(UserError, match=r"'dtype': Input should be 'auto', 'float32', 'bfloat16' or 'float16'"):
        validate_stage_config("sft", {"dtype": "fp8"})
    if torch.cuda.is_available():
        return
    # ...and with device: auto on a machine without a GPU, when the stage starts, before any model loads.
    message = refusal(tmp_path, capsys, "sft", {**FAST, "device": "auto", "dtype": "float16"},
                      chat_inputs(data_dir, tiny_model_dir))
    assert message.startswith("dtype: float16 needs a CUDA GPU (fp16 mixed precision relies on CUDA loss scaling")


def test_a_bf16_run_on_the_cpu_trains_and_saves_bf16(tmp_path, capsys, data_dir, tiny_model_dir):
    result, _ = run_in_process(tmp_path, capsys, "sft", {**FAST, "dtype": "bfloat16"},
                               chat_inputs(data_dir, tiny_model_dir))
    assert result["steps"] == 2 and math.isfinite(result["final_loss"])
    args = json.loads((tmp_path / "trainer_args.json").read_text())
    assert args["bf16"] is True and args["fp16"] is False and args["use_cpu"] is True
    out = tmp_path / "out"
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert saved_dtypes(out) == {torch.bfloat16}

    # Eval loads it in fp32 on the CPU (auto), or in bf16 when asked; both generate.
    from weightsmith.evals.generate import clear_model_cache, generate, load_model

    clear_model_cache()
    assert load_model(out)[0].dtype == torch.float32
    assert load_model(out, dtype="bfloat16")[0].dtype == torch.bfloat16
    [generation] = generate(out, ["Which depot gets truck 3?"], max_new_tokens=4, dtype="bfloat16")
    assert generation.tokens >= 1
    with pytest.raises(UserError, match=r"dtype is 'half'; use one of auto, float32, bfloat16, float16\."):
        load_model(out, dtype="half")
    clear_model_cache()


@pytest.mark.parametrize("kind", ["pretrain", "grpo"])
def test_bf16_reaches_the_other_trainers(kind, tmp_path, capsys, data_dir, tokenizer_dir, tiny_model_dir):
    # pretrain is transformers' Trainer on packed blocks; grpo is TRL's, generating its rollouts under bf16.
    config, inputs = {
        "pretrain": ({"size": "tiny", "seq_len": 32},
                     {"data_path": data_dir / "text.jsonl", "data_format": "text", "tokenizer_path": tokenizer_dir}),
        "grpo": ({"reward": ["exact_match"], "num_generations": 4, "max_completion_length": 8},
                 {"data_path": data_dir / "prompt.jsonl", "data_format": "prompt", "model_path": tiny_model_dir}),
    }[kind]
    result, _ = run_in_process(tmp_path, capsys, kind, {**FAST, **config, "dtype": "bfloat16"}, inputs)
    assert result["steps"] == 2
    assert json.loads((tmp_path / "trainer_args.json").read_text())["bf16"] is True
    assert json.loads((tmp_path / "out" / "config.json").read_text())["dtype"] == "bfloat16"
    assert saved_dtypes(tmp_path / "out") == {torch.bfloat16}


def test_an_auto_run_on_the_cpu_trains_and_saves_what_this_cpu_is_fast_at(tmp_path, capsys, data_dir, tiny_model_dir):
    if torch.cuda.is_available():
        pytest.skip("auto means bf16 on a GPU that supports it")
    from weightsmith.training.common import cpu_has_fast_bf16

    run_in_process(tmp_path, capsys, "dpo", {**FAST, "device": "auto"},
                   {"data_path": data_dir / "preference.jsonl", "data_format": "preference",
                    "model_path": tiny_model_dir})
    args = json.loads((tmp_path / "trainer_args.json").read_text())
    native = cpu_has_fast_bf16()
    assert args["bf16"] is native and args["fp16"] is False and args["use_cpu"] is True
    dtype = "bfloat16" if native else "float32"
    assert json.loads((tmp_path / "out" / "config.json").read_text())["dtype"] == dtype
    assert saved_dtypes(tmp_path / "out") == {getattr(torch, dtype)}


def sft_losses(tmp_path, data_dir, tiny_model_dir, checkpointing: bool = False,
               compile: bool = False) -> tuple[list[float], bool]:
    from weightsmith.training.common import StageInputs
    from weightsmith.training.sft import Config, build_trainer

    cfg = Config(**{**FAST, "max_steps": 3}, activation_checkpointing=checkpointing, compile=compile)
    trainer, _ = build_trainer(cfg, StageInputs(**chat_inputs(data_dir, tiny_model_dir)), stage_context(tmp_path))
    trainer.train()
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    return losses, trainer.model.is_activation_checkpointing


def test_activation_checkpointing_gives_the_same_loss(tmp_path, data_dir, tiny_model_dir):
    plain, plain_on = sft_losses(tmp_path / "plain", data_dir, tiny_model_dir, checkpointing=False)
    recomputed, recomputed_on = sft_losses(tmp_path / "ckpt", data_dir, tiny_model_dir, checkpointing=True)
    assert (plain_on, recomputed_on) == (False, True)
    assert len(plain) == len(recomputed) == 3
    # Same seed, same batches: recomputing activations changes the memory, not the arithmetic's result
    # (beyond float reordering), so the three steps' losses (after two updates) agree.
    assert recomputed == pytest.approx(plain, rel=1e-4)
    assert validate_stage_config("grpo", {"activation_checkpointing": True}).activation_checkpointing is True


def test_the_optimizers_offered_are_transformers_names():
    from transformers.training_args import OptimizerNames

    from weightsmith.training.common import BNB_OPTIMIZERS, TORCH_OPTIMIZERS

    assert set(TORCH_OPTIMIZERS + BNB_OPTIMIZERS) <= {name.value for name in OptimizerNames}
    assert validate_stage_config("pretrain", {}).optim is None
    with pytest.raises(UserError, match=r"'optim': Input should be 'adamw_torch', 'adamw_torch_fused', 'adafactor'"):
        validate_stage_config("cpt", {"optim": "adamw_9bit"})


def test_a_named_optimizer_reaches_the_trainer(tmp_path, capsys, data_dir, tiny_model_dir):
    result, _ = run_in_process(tmp_path, capsys, "sft", {**FAST, "optim": "adafactor"},
                               chat_inputs(data_dir, tiny_model_dir))
    assert result["steps"] == 2 and math.isfinite(result["final_loss"])
    assert json.loads((tmp_path / "trainer_args.json").read_text())["optim"] == "adafactor"


def test_a_bitsandbytes_optimizer_on_the_cpu_is_refused_in_one_sentence(tmp_path, capsys, data_dir, tiny_model_dir):
    message = refusal(tmp_path, capsys, "sft", {**FAST, "optim": "paged_adamw_8bit"},
                      chat_inputs(data_dir, tiny_model_dir))
    assert message == (
        "optim: paged_adamw_8bit is a bitsandbytes optimizer, which needs a CUDA GPU and the bitsandbytes package "
        "(pip install bitsandbytes), but this stage runs on the CPU; use one of adamw_torch, adamw_torch_fused, "
        "adafactor, sgd, adagrad, rmsprop or leave optim out."
    )


def test_a_compiled_model_trains_to_the_same_loss_and_saves_plain_weights(tmp_path, capsys, data_dir, tiny_model_dir):
    losses = {}
    for compile in (False, True):
        base = tmp_path / str(compile)
        result, _ = run_in_process(base, capsys, "sft", {**FAST, "max_steps": 3, "compile": compile},
                                   chat_inputs(data_dir, tiny_model_dir))
        assert result["steps"] == 3
        assert json.loads((base / "trainer_args.json").read_text())["torch_compile"] is compile
        losses[compile] = [row["loss"] for row in map(json.loads, (base / "metrics.jsonl").read_text().splitlines())
                           if "loss" in row]
    # Inductor fuses and reorders float arithmetic: the same three losses (after two updates) to float tolerance.
    assert len(losses[True]) == 3 and losses[True] == pytest.approx(losses[False], rel=1e-3)
    from safetensors.torch import load_file

    keys = load_file(str(tmp_path / "True" / "out" / "model.safetensors")).keys()
    assert keys and not any("_orig_mod" in key for key in keys)  # the plain model's names, loadable as is
