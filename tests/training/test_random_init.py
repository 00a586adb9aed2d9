"""A training stage that starts from a random initialization: ``model: {init: random, size, tokenizer}``.

The quickstart's ablation (SFT without pre-training) written as a pipeline: one real pipeline
through the real worker — a tokenizer stage, then an SFT from fresh tiny weights on a mix of chat
and replayed text. It registers one version (no junk version for the init), whose lineage says
where it started and which datasets, at which weights, it trained on.
"""

from __future__ import annotations

import pytest
import yaml

from helpers import EXAMPLES

DATA = EXAMPLES / "tiny" / "data"


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    """The pipeline, submitted and run to the end in a fresh workspace (one tokenizer + one sft job)."""
    from weightsmith.config import load_pipeline
    from weightsmith.jobs.pipeline import run_inline, submit_pipeline
    from weightsmith.workspace import Workspace

    root = tmp_path_factory.mktemp("ablation")
    Workspace.init(root)
    ws = Workspace.open(root)
    raw = {
        "name": "ablation",
        "seed": 5,
        "datasets": {
            "docs": {"path": str(DATA / "docs"), "format": "text"},
            "tasks": {"path": str(DATA / "tasks.jsonl"), "format": "chat"},
        },
        "defaults": {"device": "cpu", "logging_steps": 1},
        "stages": {
            "tokenizer": {"data": "docs", "vocab_size": 320, "min_frequency": 1},
            "sft": {
                "model": {"init": "random", "size": "tiny", "tokenizer": "tokenizer"},
                "data": {"tasks": 1.0, "docs": 0.5},
                "max_steps": 4,
                "batch_size": 4,
            },
        },
    }
    path = root / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OMP_NUM_THREADS", "1")  # the worker's stage processes inherit it
        done = run_inline(ws, submit_pipeline(ws, load_pipeline(path)))
    return ws, done


def test_sft_from_random_init_registers_one_version_whose_lineage_says_random_init(ablation):
    from weightsmith.workspace.registry import list_versions, show_version

    ws, done = ablation
    assert [(job["stage"], job["state"]) for job in done["jobs"]] == [("tokenizer", "succeeded"), ("sft", "succeeded")]
    versions = list_versions(ws)
    assert [v["ref"] for v in versions] == ["ablation@v1"]  # the init left no version of its own
    version = show_version(ws, "ablation@v1")
    assert version["stage"] == "sft" and version["parent"] is None
    assert version["source"] == "init: random (size tiny)"
    assert sorted(version["data"]) == ["docs@v1", "tasks@v1"]
    assert version["data_weights"] == {"tasks@v1": 1.0, "docs@v1": 0.5}
    assert [(node["ref"], node["source"], node["data_weights"]) for node in version["lineage"]] == [
        ("ablation@v1", "init: random (size tiny)", {"tasks@v1": 1.0, "docs@v1": 0.5})]


def test_models_show_says_where_it_started_and_the_weights(ablation):
    from helpers import CLI

    ws, _ = ablation
    shown = CLI(ws.root)("models", "show", "ablation@v1").stdout
    assert "parent: init: random (size tiny)" in shown
    assert "tasks@v1 (weight 1)" in shown and "docs@v1 (weight 0.5)" in shown


def test_the_run_reports_what_each_dataset_contributed(ablation):
    from weightsmith.workspace.models import Run

    ws, done = ablation
    with ws.session() as s:
        run = s.get(Run, done["models"][0]["run"])
        result, inputs = run.result, run.config["inputs"]
    assert result["steps"] == 4 and inputs["model_init"] == {"init": "random", "size": "tiny"}
    mix = {entry["name"]: entry for entry in result["data"]["mix"]}
    assert mix["tasks"]["trained"] + mix["docs"]["trained"] == 16 == result["data"]["examples"]
    assert (mix["tasks"]["ref"], mix["docs"]["ref"]) == ("tasks@v1", "docs@v1")
    assert mix["docs"]["format"] == "text" and mix["docs"]["prepared"]["replay"] is True


def test_the_init_is_seeded_by_the_pipeline_seed_and_then_trained(ablation):
    """The fresh weights are what the pretrain stage would start from with seed 5; SFT then moved them."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, set_seed

    from weightsmith.training.models import build_model

    ws, done = ablation
    sft_job = next(job for job in done["jobs"] if job["stage"] == "sft")
    init_dir = ws.job_dir(sft_job["id"]) / "work" / "init-random-tiny-seed5"
    tokenizer = AutoTokenizer.from_pretrained(init_dir)
    set_seed(5)
    expected = build_model("tiny", tokenizer, max_positions=2048).state_dict()
    init = load_file(str(init_dir / "model.safetensors"))
    assert all(torch.equal(init[name], expected[name]) for name in init)
    trained = load_file(f"{done['models'][0]['path']}/model.safetensors")
    assert any(not torch.equal(trained[name], init[name]) for name in init)


@pytest.mark.parametrize("kind", ["cpt", "dpo"])
def test_cpt_and_dpo_start_from_a_random_init_too(tmp_path, capsys, data_dir, tokenizer_dir, kind):
    """Every model-consuming stage takes the init the same way; dpo's frozen reference is the init itself."""
    import json

    from training.training_helpers import run_in_process

    config = {"max_steps": 2, "batch_size": 4, "logging_steps": 1, "save_steps": 100, "device": "cpu"}
    data = {"cpt": ("text.jsonl", "text"), "dpo": ("preference.jsonl", "preference")}[kind]
    if kind == "cpt":
        config["seq_len"] = 32
    inputs = {"data_path": data_dir / data[0], "data_format": data[1], "tokenizer_path": tokenizer_dir,
              "model_init": {"init": "random", "size": "tiny"}}
    result, _ = run_in_process(tmp_path, capsys, kind, config, inputs)
    assert result["steps"] == 2 and (tmp_path / "work" / "init-random-tiny-seed0" / "model.safetensors").is_file()
    if kind == "dpo":
        # Before the first update the policy is its reference: DPO's implicit rewards are 0.
        first = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
        assert first["rewards/chosen"] == pytest.approx(0.0, abs=1e-6)


def test_a_random_init_without_a_tokenizer_is_refused(tmp_path, capsys, data_dir):
    from training.training_helpers import refusal

    message = refusal(tmp_path, capsys, "sft", {"device": "cpu"},
                      {"data_path": data_dir / "chat.jsonl", "data_format": "chat",
                       "model_init": {"init": "random", "size": "tiny"}})
    assert message == ("stage 'sft' starts from a random initialization (init: random (size tiny)), which takes its "
                       "vocabulary from a tokenizer: set inputs.tokenizer_path.")
