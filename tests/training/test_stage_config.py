"""Stage configs: cheap to import and validate, self-documenting, the same names across recipes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import BaseModel
from training.training_helpers import runner_env

from weightsmith.errors import UserError
from weightsmith.training import STAGE_KINDS, TRAINING_STAGE_KINDS, stage_config_class, validate_stage_config
from weightsmith.training.common import FineTuneConfig, TrainStageConfig


def test_the_six_training_stages_are_registered_in_pipeline_order():
    assert TRAINING_STAGE_KINDS == ("tokenizer", "pretrain", "cpt", "sft", "dpo", "grpo")
    # Dataset-producing stages (synth) run through the same runner and registry.
    assert [kind for kind in STAGE_KINDS if kind in TRAINING_STAGE_KINDS] == list(TRAINING_STAGE_KINDS)


def test_validating_configs_imports_no_ml_library():
    code = (
        "import sys\n"
        "from weightsmith.training import STAGE_KINDS, TRAINING_STAGE_KINDS, stage_config_class, validate_stage_config\n"
        "for kind in STAGE_KINDS:\n"
        "    stage_config_class(kind)\n"
        "for kind in TRAINING_STAGE_KINDS:\n"
        "    validate_stage_config(kind, {})\n"
        "heavy = [m for m in ('torch', 'transformers', 'trl', 'peft', 'datasets', 'tokenizers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=runner_env())
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("kind", TRAINING_STAGE_KINDS)
def test_every_setting_has_a_working_default_and_a_description(kind: str):
    config_class = stage_config_class(kind)
    assert issubclass(config_class, BaseModel)
    assert config_class.model_config.get("extra") == "forbid"
    config_class()  # the defaults validate
    for name, field in config_class.model_fields.items():
        assert field.description, f"{kind}.{name} has no description"
        assert not field.is_required(), f"{kind}.{name} has no default"


def test_training_stages_share_the_common_hyperparameter_names():
    common = set(TrainStageConfig.model_fields)
    assert {"max_steps", "batch_size", "grad_accum", "lr", "warmup_steps", "logging_steps", "save_steps", "device"} <= common
    for kind in ("pretrain", "cpt", "sft", "dpo", "grpo"):
        assert issubclass(stage_config_class(kind), TrainStageConfig)
    for kind in ("sft", "dpo", "grpo"):
        assert issubclass(stage_config_class(kind), FineTuneConfig)


def test_a_misspelt_key_names_the_key_and_the_fix():
    with pytest.raises(UserError, match=r"'warmup_step' is not a setting of the pretrain stage \(did you mean 'warmup_steps'\?\)"):
        validate_stage_config("pretrain", {"warmup_step": 10})
    # The transformers/TRL name of a setting points at ours.
    with pytest.raises(UserError, match=r"'learning_rate' is not a setting of the sft stage \(did you mean 'lr'\?\)"):
        validate_stage_config("sft", {"learning_rate": 1e-4})


def test_a_bad_value_names_the_key():
    with pytest.raises(UserError, match=r"sft config: 'lora.r'"):
        validate_stage_config("sft", {"lora": {"r": 0}})
    with pytest.raises(UserError, match=r"'size'"):
        validate_stage_config("pretrain", {"size": "gigantic"})
    with pytest.raises(UserError, match=r"sft config: 'adam_beta2'"):
        validate_stage_config("sft", {"adam_beta2": 1.0})
    with pytest.raises(UserError, match=r"grpo config: 'scale_rewards'"):
        validate_stage_config("grpo", {"scale_rewards": "std"})


def test_grpo_batches_hold_whole_groups():
    with pytest.raises(UserError, match=r"multiple of num_generations"):
        validate_stage_config("grpo", {"batch_size": 6, "num_generations": 4})
    assert validate_stage_config("grpo", {"batch_size": 8, "num_generations": 4, "reward": ["a", "b"]})


def test_an_unknown_stage_kind_is_a_user_error():
    with pytest.raises(UserError, match=r"unknown stage kind 'sfft' \(did you mean 'sft'\?\)"):
        stage_config_class("sfft")
