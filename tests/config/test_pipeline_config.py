"""Pipeline YAML validation: every mistake is one sentence naming the key, before any compute."""

from __future__ import annotations

import shutil

import pytest
import yaml

from helpers import EXAMPLES
from weightsmith.config import load_pipeline
from weightsmith.errors import UserError

TINY = EXAMPLES / "tiny" / "pipeline.yaml"


def test_tiny_pipeline_is_valid_and_ordered():
    spec = load_pipeline(TINY)
    assert [s.name for s in spec.stages] == ["tokenizer", "pretrain", "cpt", "sft", "dpo", "grpo", "gate", "promote"]
    names = {s.name for s in spec.stages}
    sft = next(s for s in spec.stages if s.name == "sft")
    assert sft.upstream(names) == ["cpt"] and sft.config["lora"]["r"] == 8
    assert sft.config["device"] == "cpu"  # from defaults
    pretrain = next(s for s in spec.stages if s.name == "pretrain")
    assert pretrain.upstream(names) == ["tokenizer"]


def test_overrides_with_and_without_stages_prefix():
    spec = load_pipeline(TINY, ["sft.max_steps=3", "stages.dpo.lr=0.5", "seed=7"])
    by = {s.name: s for s in spec.stages}
    assert by["sft"].config["max_steps"] == 3 and by["dpo"].config["lr"] == 0.5 and spec.seed == 7


def _write(tmp_path, mutate):
    raw = yaml.safe_load(TINY.read_text())
    mutate(raw)
    shutil.copytree(TINY.parent / "data", tmp_path / "data")
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda r: r["stages"]["sft"].update(max_stepz=3), r"stages\.sft\.max_stepz: unknown key \(did you mean 'max_steps'\?\)"),
        (lambda r: r["stages"]["sft"]["lora"].update(rank=3), r"stages\.sft\.lora\.rank: unknown key"),
        (lambda r: r["stages"]["sft"].update(lr="fast"), r"stages\.sft\.lr: .*'fast'"),
        (lambda r: r.update(stagez={}), r"unknown key 'stagez' \(did you mean 'stages'\?\)"),
        (lambda r: r["stages"].update(sfft={"model": "cpt", "data": "tasks"}), r"unknown stage kind 'sfft' \(did you mean 'sft'\?\)"),
        (lambda r: r["stages"]["sft"].pop("model"), r"stages\.sft: a sft stage needs 'model:'"),
        (lambda r: r["stages"]["dpo"].update(after=["nope"]), r"stages\.dpo\.after: no stage 'nope'"),
        (lambda r: r["stages"]["cpt"].update(model="sft"), r"cycle"),
        (lambda r: r["stages"]["gate"].update(suit="x.yaml"), r"stages\.gate\.suit: unknown key \(did you mean 'suite'\?\)"),
        (lambda r: r["stages"]["promote"].pop("model"), r"stages\.promote: a promote stage needs 'model:'"),
    ],
)
def test_bad_pipeline_keys_name_the_key(tmp_path, mutate, expected):
    with pytest.raises(UserError, match=expected):
        load_pipeline(_write(tmp_path, mutate))


def test_bad_override_and_missing_file(tmp_path):
    with pytest.raises(UserError, match="no stage 'sftt'.*did you mean 'sft'"):
        load_pipeline(TINY, ["stages.sftt.max_steps=3"])
    with pytest.raises(UserError, match="key=value"):
        load_pipeline(TINY, ["max_steps"])
    with pytest.raises(UserError, match="does not exist"):
        load_pipeline(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstages: [unclosed\n")
    with pytest.raises(UserError, match=r"bad\.yaml:\d+:\d+: not valid YAML"):
        load_pipeline(bad)


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path):
    """PyYAML keeps the last of two equal keys; a pipeline that says max_steps twice is a mistake."""
    twice = tmp_path / "twice.yaml"
    twice.write_text(
        "name: x\nstages:\n  sft: {model: m, data: d, max_steps: 10, lr: 1.0e-4,\n        max_steps: 20}\n"
    )
    with pytest.raises(UserError, match=r"twice\.yaml:4:9: not valid YAML \('max_steps' is given twice in one "
                       r"mapping \(first on line 3\); keep one\)"):
        load_pipeline(twice)


def test_merge_keys_still_work_and_may_be_overridden(tmp_path):
    """`<<: *base` is YAML's way to share settings; a key beside it overrides, which is not a repeat."""
    from weightsmith.yamlfile import load_yaml_mapping

    shared = tmp_path / "shared.yaml"
    shared.write_text("a: &base {max_steps: 3, lr: 0.001}\nb:\n  <<: *base\n  max_steps: 5\n")
    assert load_yaml_mapping(shared, "pipeline", "x")["b"] == {"max_steps": 5, "lr": 0.001}


def test_a_key_given_twice_in_an_override_value_is_refused():
    with pytest.raises(UserError, match=r"override 'stages\.sft\.lora=\{r: 4, r: 8\}': 'r' is given twice in one "
                       r"mapping \(first on line 1\); keep one\."):
        load_pipeline(TINY, ["stages.sft.lora={r: 4, r: 8}"])
