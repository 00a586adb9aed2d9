"""Stage options for knowledge-injection experiments: LoRA placement by module name, the LR schedule and warmup.

Each is a key of the recipe's pydantic Config (so a pipeline YAML sets it and a wrong value is refused
before compute), and each reaches the library trainer as set.
"""

from __future__ import annotations

import pytest
from training.training_helpers import refusal, run_in_process, stage_context

from weightsmith.errors import UserError
from weightsmith.training import validate_stage_config

FAST = {"logging_steps": 1, "save_steps": 1000, "device": "cpu", "batch_size": 4}


def test_lora_adapts_exactly_the_named_modules(tmp_path, data_dir, tiny_model_dir):
    from weightsmith.training.common import StageInputs
    from weightsmith.training.sft import Config, build_trainer

    cfg = Config(**FAST, max_steps=1, lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]})
    inputs = StageInputs(data_path=data_dir / "chat.jsonl", data_format="chat", model_path=tiny_model_dir)
    trainer, _ = build_trainer(cfg, inputs, stage_context(tmp_path))
    adapted = {name.rpartition(".lora_A")[0] for name, _ in trainer.model.named_modules() if name.endswith(".lora_A")}
    # Two layers in the tiny model, each with its query and value projections adapted, nothing else.
    assert sorted(name.rpartition(".")[2] for name in adapted) == ["q_proj", "q_proj", "v_proj", "v_proj"]
    trainable = [name for name, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)


def test_a_module_name_the_model_lacks_is_refused_with_the_names_it_has(tmp_path, capsys, data_dir, tiny_model_dir):
    message = refusal(
        tmp_path, capsys, "sft", {**FAST, "lora": {"target_modules": ["q_prj"]}},
        {"data_path": data_dir / "chat.jsonl", "data_format": "chat", "model_path": tiny_model_dir},
    )
    assert message.startswith("lora.target_modules: no layer of the model is named 'q_prj' (did you mean 'q_proj'?)")
    assert "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj" in message


def test_target_modules_in_the_config():
    # One name is a list of one (peft would read a bare string as a regular expression over full paths).
    assert validate_stage_config("sft", {"lora": {"target_modules": "q_proj"}}).lora.target_modules == ["q_proj"]
    assert validate_stage_config("dpo", {"lora": {}}).lora.target_modules == "all-linear"
    with pytest.raises(UserError, match=r"'lora\.target_modules': name at least one module"):
        validate_stage_config("grpo", {"lora": {"target_modules": []}})
    with pytest.raises(UserError, match=r"'lr_schedule': Input should be 'cosine', 'linear', 'constant'"):
        validate_stage_config("cpt", {"lr_schedule": "step"})


def test_the_schedule_and_warmup_reach_the_trainer(tmp_path, capsys, data_dir, tiny_model_dir):
    cfg = {**FAST, "max_steps": 6, "lr": 3e-3, "lr_schedule": "constant_with_warmup", "warmup_steps": 3}
    run_in_process(tmp_path, capsys, "sft", cfg, {"data_path": data_dir / "chat.jsonl", "data_format": "chat",
                                                  "model_path": tiny_model_dir})
    import json

    args = json.loads((tmp_path / "trainer_args.json").read_text())
    assert args["lr_scheduler_type"] == "constant_with_warmup" and args["warmup_steps"] == 3
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    # Linear warmup from 0 to lr over 3 steps, then constant.
    assert lrs == pytest.approx([0.0, 1e-3, 2e-3, 3e-3, 3e-3, 3e-3])
