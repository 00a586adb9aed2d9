"""The names users type from transformers/TRL/peft point at ours, before any spelling match."""

from __future__ import annotations

import shutil

import pytest
import yaml

from helpers import EXAMPLES
from weightsmith.config import load_pipeline, suggest_key
from weightsmith.errors import UserError

TINY = EXAMPLES / "tiny" / "pipeline.yaml"


@pytest.fixture
def tiny(tmp_path):
    shutil.copytree(TINY.parent / "data", tmp_path / "data")
    path = tmp_path / "pipeline.yaml"
    path.write_text(TINY.read_text())
    return path


@pytest.mark.parametrize("override, expected", [
    # 'learning_rate' is closer in spelling to 'padding_free' than to 'lr': the map comes first.
    ("sft.learning_rate=1e-4", r"stages\.sft\.learning_rate: unknown key \(did you mean 'lr'\?\)"),
    ("sft.num_train_epochs=3", r"\(did you mean 'max_steps'\? stages count optimizer steps, not epochs"),
    ("sft.per_device_train_batch_size=4", r"\(did you mean 'batch_size'\?\)"),
    ("sft.gradient_accumulation_steps=4", r"\(did you mean 'grad_accum'\?\)"),
    ("sft.warmup_ratio=0.1", r"\(did you mean 'warmup_steps'\? a number of steps, not a fraction"),
    ("sft.max_seq_length=256", r"\(did you mean 'max_length'\?\)"),
    ("pretrain.max_seq_length=256", r"\(did you mean 'seq_len'\?\)"),
    ("sft.lora_r=4", r"\(did you mean 'lora\.r', written lora: \{r: \.\.\.\}\?\)"),
    ("sft.lora.lora_alpha=4", r"lora\.lora_alpha"),
    ("pretrain.lora_r=4", r"\(the transformers/TRL name of 'lora\.r', which is not a setting here\)"),
    ("grpo.reward_funcs=chrf", r"\(did you mean 'reward'\?\)"),
    # A stage setting written without its stage: where it goes.
    ("learning_rate=1e-3", r"no top-level key 'learning_rate'; 'lr' is a stage setting: write pretrain\.lr=1e-3 for one "
                           r"stage, or defaults\.lr=1e-3 for every stage that has it \(pretrain, cpt, sft, dpo, grpo\)"),
    ("max_steps=3", r"no top-level key 'max_steps'; 'max_steps' is a stage setting: write pretrain\.max_steps=3"),
])
def test_library_names_point_at_ours(tiny, override, expected):
    with pytest.raises(UserError, match=expected):
        load_pipeline(tiny, [override])


def test_suggest_key_prefers_the_library_map_then_spelling():
    assert suggest_key("learning_rate", ["padding_free", "lr"]) == " (did you mean 'lr'?)"
    assert suggest_key("Learning_Rate", ["padding_free", "lr"]) == " (did you mean 'lr'?)"
    assert suggest_key("max_stepz", ["max_steps"]) == " (did you mean 'max_steps'?)"
    assert suggest_key("zzz", ["max_steps"]) == ""


def test_the_cli_says_it_in_one_sentence(tiny, cli):
    proc = cli("run", str(tiny), "sft.learning_rate=1e-4", "--detach", check=False)
    assert proc.returncode == 2 and "did you mean 'lr'?" in proc.stderr and "padding_free'?" not in proc.stderr
