"""The reference is generated from the code: the committed docs/reference/ cannot drift from it.

A key added to a recipe's Config shows up in the generated docs (and makes the committed ones stale);
the parameter counts of the size table equal the models' own, counted on the meta device; the CLI
verbs print the same content at 80 columns.
"""

from __future__ import annotations

import json
import os

import pytest
from pydantic import Field

from helpers import CLI, REPO
from weightsmith import reference

DOCS = REPO / "docs" / "reference"


def test_committed_reference_equals_the_generator():
    stale = reference.stale_files(DOCS)
    assert not stale, f"docs/reference/ is stale ({', '.join(stale)}): run 'make reference' and commit it"
    assert set(reference.render_markdown()) == {p.name for p in DOCS.glob("*.md")}


def test_a_key_added_to_a_config_appears_in_the_docs(monkeypatch):
    import weightsmith.training.sft as sft

    class WithKnob(sft.Config):
        new_knob: int = Field(7, ge=2, description="A setting added after the docs were written.")

    doc = reference.stage_reference("sft", config=WithKnob)
    assert {"key": "new_knob", "type": "int", "required": False, "default": "7", "bounds": ">= 2",
            "description": "A setting added after the docs were written."} in doc["settings"]
    # Through the recipe itself, the way the pipeline finds it: the generated page shows it, and the
    # committed one is reported stale.
    monkeypatch.setattr(sft, "Config", WithKnob)
    page = reference.render_markdown()["stages.md"]
    assert "| `new_knob` | int (>= 2) | `7` | A setting added after the docs were written. |" in page
    assert reference.stale_files(DOCS) == ["stages.md"]
    assert "new_knob: int = 7 (>= 2)" in reference.stages_text("sft")


def test_every_kind_and_every_key_is_documented():
    from weightsmith.config import REFERENCE_KEY_HELP, REFERENCE_KEYS, TOP_KEY_HELP, TOP_KEYS
    from weightsmith.evals.suite import SUITE_KEYS
    from weightsmith.training import stage_config_class

    page = reference.render_markdown()["stages.md"]
    for kind in reference.stage_kinds():
        assert f"## `{kind}`" in page
    for key in stage_config_class("grpo").model_fields:
        assert f"| `{key}` |" in page
    assert "| `lora.r` | int (>= 1) | `16` | Adapter rank. |" in page  # nested blocks, flattened
    assert set(TOP_KEY_HELP) == TOP_KEYS and set(REFERENCE_KEY_HELP) == set(REFERENCE_KEYS)
    assert {k["key"] for k in reference.suite_reference()["top"]} == SUITE_KEYS
    assert all(k["description"] for k in reference.suite_reference()["top"]), "a suite key without a description"


@pytest.mark.parametrize("size", ["tiny", "small", "base", "medium", "large", "tiny-moe", "small-moe", "base-moe"])
def test_parameter_counts_equal_the_model_built_on_the_meta_device(size):
    import torch

    from weightsmith.training.models import MODEL_SIZES, build_model

    class Vocabulary:  # what build_model reads from a tokenizer
        bos_token_id, eos_token_id, pad_token_id = 1, 2, 0

        def __len__(self):
            return reference.SIZES_AT_VOCAB

    with torch.device("meta"):  # shapes only: nothing is allocated
        model = build_model(size, Vocabulary(), max_positions=128)
    counted = sum(p.numel() for p in model.parameters())
    assert reference.count_parameters(MODEL_SIZES[size], reference.SIZES_AT_VOCAB) == counted
    row = next(s for s in reference.sizes_reference()["sizes"] if s["size"] == size)
    assert row["parameters"] == counted
    # Per token: the experts it is not routed to do not count (a dense model uses every parameter).
    spec = MODEL_SIZES[size]
    experts = [p for name, p in model.named_parameters() if ".mlp.experts." in name]
    assert bool(experts) == spec.is_moe
    unused = sum(p.numel() for p in experts) * (spec.num_experts - spec.experts_per_token) // max(spec.num_experts, 1)
    assert row["active_parameters"] == counted - unused
    assert type(model).__name__ == ("MixtralForCausalLM" if spec.is_moe else "LlamaForCausalLM")


def test_metrics_name_the_columns_they_read():
    by_name = {m["name"]: m for m in reference.metrics_reference()}
    assert by_name["exact_match"]["columns"] == ["answer"]
    assert by_name["regex_match"]["columns"] == ["pattern"]
    assert by_name["json_valid"]["columns"] == []
    assert by_name["llm_judge"]["options"] == ["endpoint", "model", "rubric"]
    assert by_name["perplexity"] == {**by_name["perplexity"], "reads": "text", "direction": "lower"}


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    return CLI(tmp_path_factory.mktemp("reference"))  # no workspace: the reference needs none


def test_cli_verbs_fit_80_columns_and_json_is_the_same_documents(cli):
    env = {"COLUMNS": "80"}
    out = {" ".join(argv): cli(*argv, env=env).stdout for argv in (["stages"], ["stages", "sft"], ["sizes"], ["metrics"])}
    for argv, text in out.items():
        too_long = [line for line in text.splitlines() if len(line) > 80]
        assert text.strip() and not too_long, (argv, too_long)
    assert all(f"\n{kind} " in out["stages"] or out["stages"].startswith(kind) for kind in reference.stage_kinds())
    sft = out["stages sft"]
    assert "lr: float = 0.0001 (> 0.0)" in sft and "Peak learning rate (AdamW)." in sft
    assert "lora.r: int = 16 (>= 1)" in sft and "model (required):" in sft
    assert "exact_match (higher is better; prompt or chat rows; columns: answer)" in out["metrics"]
    assert "tiny" in out["sizes"] and "393.5K" in out["sizes"]
    assert cli.json("stages", "dpo") == json.loads(json.dumps(reference.stage_reference("dpo")))
    assert cli.json("metrics") == reference.metrics_reference()


def test_cli_unknown_kind_and_reference_check(cli, tmp_path):
    bad = cli("stages", "sftt", check=False)
    assert bad.returncode == 2 and "unknown stage kind 'sftt' (did you mean 'sft'?)" in bad.stderr
    out = tmp_path / "ref"
    assert reference.stale_files(out) == sorted(reference.render_markdown(), key=list(reference.render_markdown()).index)
    cli("reference", "--output", str(out))
    assert sorted(os.listdir(out)) == sorted(reference.render_markdown())
    assert cli("reference", "--check", "--output", str(out)).returncode == 0
