"""``distributed: ddp | fsdp``: the stage key, what it becomes in the trainer's arguments, FSDP checkpoints.

accelerate (1.15) shards a model with FSDP only across GPUs (its CPU processes always run as DDP), so on
this CPU-only machine ``distributed: fsdp`` is refused in one sentence before any compute, and the FSDP
training run itself (train, resume, save) is a step of ``bench/device_check.sh`` on a machine with two
or more GPUs. What runs here: the validation, the refusal, that the pinned transformers turns our
arguments into the FSDP2 plugin settings we mean, that a checkpoint in FSDP's file layout is
committed, checked and picked for resume, and that a model sharded by PyTorch's own FSDP2 on two gloo
ranks is saved whole, as a plain folder (the save a stage makes after FSDP training).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from training.training_helpers import refusal, stage_context

from weightsmith.errors import UserError
from weightsmith.training import validate_stage_config
from weightsmith.training.checkpoint import commit_checkpoint, plan_resume

FAST = {"logging_steps": 1, "save_steps": 1000, "batch_size": 4, "max_steps": 2}


def test_ddp_is_the_default_and_fsdp_needs_several_processes_and_full_weights():
    for kind in ("pretrain", "cpt", "sft", "dpo", "grpo"):
        assert validate_stage_config(kind, {}).distributed == "ddp"
    assert validate_stage_config("sft", {"distributed": "fsdp", "processes": 2}).distributed == "fsdp"
    with pytest.raises(UserError, match=r"distributed: fsdp shards the model across processes: set processes to"):
        validate_stage_config("sft", {"distributed": "fsdp"})
    with pytest.raises(UserError, match=r"lora with distributed: fsdp is not supported: train LoRA adapters with"):
        validate_stage_config("dpo", {"distributed": "fsdp", "processes": 2, "lora": {"r": 4}})
    with pytest.raises(UserError, match=r"'distributed': Input should be 'ddp' or 'fsdp'"):
        validate_stage_config("sft", {"distributed": "zero3"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="refused only where no CUDA device is present")
def test_fsdp_on_the_cpu_is_refused_in_one_sentence_before_any_compute(tmp_path, capsys, data_dir, tiny_model_dir):
    message = refusal(tmp_path, capsys, "sft", {**FAST, "distributed": "fsdp", "processes": 2},
                      {"data_path": data_dir / "chat.jsonl", "data_format": "chat", "model_path": tiny_model_dir})
    assert message == (
        "distributed: fsdp needs CUDA GPUs (accelerate shards a model only across GPUs, and would silently run CPU "
        "processes as DDP); on the CPU use distributed: ddp, or leave distributed out."
    )


def test_fsdp_becomes_the_trainers_fsdp2_settings_with_full_state_checkpoints(tmp_path):
    from transformers import TrainingArguments

    from weightsmith.training.common import fsdp_arguments

    ddp = validate_stage_config("sft", {"processes": 2, "activation_checkpointing": True})
    assert fsdp_arguments(ddp) == {}
    cfg = validate_stage_config("sft", {"distributed": "fsdp", "processes": 2, "activation_checkpointing": True})
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", **fsdp_arguments(cfg))
    # What accelerate's FullyShardedDataParallelPlugin is built from (transformers 5.24 Trainer).
    assert args.fsdp_plugin_args == {
        "fsdp_version": 2,
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",  # one unit per decoder layer (_no_split_modules)
        "cpu_ram_efficient_loading": False,
        "state_dict_type": "FULL_STATE_DICT",
        "activation_checkpointing": True,
        "reshard_after_forward": True,
    }


def test_our_trainer_arguments_hand_checkpointing_to_fsdp(tmp_path, monkeypatch):
    from weightsmith.training import common

    monkeypatch.setattr(common, "check_device_settings", lambda cfg: common.Precision(False, True, False))
    ctx = stage_context(tmp_path)
    cfg = validate_stage_config("sft", {"distributed": "fsdp", "processes": 2, "activation_checkpointing": True})
    args = common.trainer_arguments(cfg, ctx)
    # The trainer refuses both at once: FSDP's own checkpointing avoids a second all-gather in backward.
    assert args["activation_checkpointing"] is False and args["fsdp_config"]["activation_checkpointing"] is True
    ddp = common.trainer_arguments(validate_stage_config("sft", {"activation_checkpointing": True}), ctx)
    assert ddp["activation_checkpointing"] is True and "fsdp" not in ddp


def _fsdp_checkpoint(root, step):
    """The files transformers 5.24 + accelerate 1.15 write for an FSDP FULL_STATE_DICT checkpoint."""
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    weights = {"w": torch.full((4, 4), float(step))}
    save_file(weights, str(path / "model.safetensors"))
    torch.save(weights, path / "pytorch_model_fsdp.bin")
    torch.save({"state": {}, "param_groups": []}, path / "optimizer.bin")
    torch.save({"last_epoch": step}, path / "scheduler.pt")
    for rank in (0, 1):
        torch.save({"python": rank}, path / f"rng_state_{rank}.pth")
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return path


def test_an_fsdp_checkpoint_commits_and_is_picked_for_resume_and_its_optimizer_is_required(tmp_path):
    first, second = _fsdp_checkpoint(tmp_path, 2), _fsdp_checkpoint(tmp_path, 4)
    commit_checkpoint(first, 2)
    commit_checkpoint(second, 4)
    assert plan_resume(tmp_path).checkpoint.step == 4

    (second / "optimizer.bin").unlink()
    plan = plan_resume(tmp_path)
    assert plan.checkpoint.step == 2
    assert plan.message() == "checkpoint-4 is incomplete (optimizer.bin missing); resuming from checkpoint-2 " \
                             "(removed checkpoint-4)"

    torn = _fsdp_checkpoint(tmp_path, 6)
    (torn / "optimizer.bin").unlink()
    with pytest.raises(RuntimeError, match=r"checkpoint-6 lacks optimizer.bin; refusing to mark it complete"):
        commit_checkpoint(torn, 6)


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "activation-checkpointing"])
def test_a_model_sharded_by_fsdp2_is_saved_whole_as_a_plain_bf16_folder(tmp_path, tiny_model_dir, checkpointing):
    # The save a stage makes after FSDP training, on two CPU ranks sharded by torch's own fully_shard; with
    # activation checkpointing, its layers wrapped first (their parameters then named ..._checkpoint_wrapped_module...).
    from safetensors.torch import load_file

    script = Path(__file__).with_name("fsdp_save_rank.py")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(script),
         str(tiny_model_dir), str(out), *(["ac"] if checkpointing else [])],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved, original = load_file(str(out / "model.safetensors")), load_file(str(tiny_model_dir / "model.safetensors"))
    assert saved.keys() == original.keys()  # whole, and the tied output head stored once, as before
    for name, tensor in original.items():
        assert saved[name].dtype == torch.bfloat16 and torch.equal(saved[name], tensor.to(torch.bfloat16)), name
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert json.loads((out / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(str(out))  # a normal folder: transformers opens it as is
    assert AutoTokenizer.from_pretrained(str(out)).eos_token is not None
