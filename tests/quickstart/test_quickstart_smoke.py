"""The quickstart, shrunk to seconds (`--preset smoke`): every part of the lifecycle is wired.

The real numbers come from the `laptop` preset (see the README); here we check that every
stage registers a model version, every version gets an eval run with the KPIs and their
intervals, the generated preference pairs are a versioned dataset with provenance, and the
gate's verdict is recorded.
"""

from __future__ import annotations

import json

import pytest

from helpers import CLI

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("qs")
    cli = CLI(root)
    proc = cli("quickstart", "--preset", "smoke", "--ablation", "--rl", "--dir", str(root / "ws"), "--json", timeout=900)
    return CLI(root / "ws"), json.loads(proc.stdout)


TABLE_KPIS = ("exec_accuracy_phrasing", "exec_accuracy_indist", "exec_accuracy_heldout", "parse_rate")


def test_every_stage_has_a_model_and_kpis_with_intervals(smoke):
    cli, doc = smoke
    assert [s["stage"] for s in doc["stages"]] == ["pretrain", "sft", "dpo", "grpo"]
    assert 0 < doc["elapsed_s"] < 900
    assert doc["machine_overrides"] == []  # only the laptop preset's SFT steps depend on the CPU
    pretrain, *trained = doc["stages"]
    # The pretrained model learned the manual, not requests: scored on the manual's perplexity only.
    assert set(pretrain["kpis"]) == {"manual_perplexity"} and pretrain["phrasing_by_family"] == {}
    assert all(set(stage["kpis"]) == {*TABLE_KPIS, "manual_perplexity"} for stage in trained)
    for stage in trained:
        assert stage["model"].startswith("quill@v")
        for kpi in TABLE_KPIS:
            entry = stage["kpis"][kpi]
            assert 0.0 <= entry["value"] <= 1.0
            lo, hi = entry["ci"]
            assert lo <= entry["value"] <= hi
        # Which held-out wordings the model misreads: every phrasing request counted under its family.
        by_family = stage["phrasing_by_family"]
        assert sum(f["n"] for f in by_family.values()) == stage["kpis"]["exec_accuracy_phrasing"]["n"]
        assert all(0 <= f["correct"] <= f["n"] for f in by_family.values())
    versions = [v for v in cli.json("models", "list") if v["name"] == "quill"]
    assert [v["stage"] for v in versions] == ["pretrain", "sft", "dpo", "grpo"]
    assert versions[2]["parent"] == versions[1]["ref"]  # dpo starts from sft


def test_each_stage_is_compared_with_the_one_before_and_the_ablation_with_sft(smoke):
    cli, doc = smoke
    assert "vs_parent" not in doc["stages"][1]  # SFT against a model that was never asked for programs
    for parent, stage in zip(doc["stages"][1:], doc["stages"][2:]):
        comparison = stage["vs_parent"]
        assert comparison["parent"] == parent["model"]
        for kpi in TABLE_KPIS:
            entry = comparison[kpi]
            assert entry["ci"][0] <= entry["diff"] <= entry["ci"][1] and 0.0 <= entry["p_value"] <= 1.0
    ablation = doc["ablation"]
    assert ablation["model"].startswith("quill-scratch@v")
    assert set(ablation["pretrained_vs_random"]) == set(TABLE_KPIS)
    scratch = [v for v in cli.json("models", "list") if v["name"] == "quill-scratch"]
    # The ablation's SFT starts from a random init: one version, no parent, no junk init version.
    assert [v["stage"] for v in scratch] == ["sft"] and scratch[0]["parent"] is None
    assert scratch[0]["source"].startswith("init: random")


def test_files_a_user_can_read_and_copy(smoke):
    _, doc = smoke
    from pathlib import Path

    for key in ("pipeline", "suite"):
        assert Path(doc[key]).is_file()
    data = Path(doc["pipeline"]).parent / "data"
    for name in ("tasks_train.jsonl", "prompts_train.jsonl", "eval_indist.jsonl", "eval_heldout.jsonl",
                 "eval_phrasing.jsonl", "provenance.json"):
        assert (data / name).is_file()
    assert any((data / "manual").glob("*.md"))


def test_generated_preferences_are_a_dataset_with_provenance(smoke):
    cli, _ = smoke
    prefs = [d for d in cli.json("data", "list") if d["name"] == "prefs"]
    assert prefs and prefs[0]["format"] == "preference" and prefs[0]["rows"] > 0
    provenance = prefs[0]["provenance"]
    assert provenance["reward"] == "quill_exec" and provenance["model"]
    dpo = [v for v in cli.json("models", "list") if v["stage"] == "dpo" and v["name"] == "quill"][0]
    assert dpo["data"] == [prefs[0]["ref"]]


def test_eval_runs_and_gate_are_recorded(smoke):
    cli, doc = smoke
    for stage in doc["stages"]:
        report = cli.json("eval", "report", str(stage["eval_run"]))
        assert report["run"]["model"] == stage["model"]
        assert set(report["run"]["kpis"]) == set(stage["kpis"])
    gate = doc["gate"]
    assert gate["candidate"] == doc["stages"][-1]["model"] and isinstance(gate["passed"], bool)
    assert {r["kpi"] for r in gate["rules"]} >= {"exec_accuracy_indist", "parse_rate"}


def test_quickstart_refuses_a_non_empty_folder_and_bad_overrides(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    cli = CLI(tmp_path)
    proc = cli("quickstart", "--preset", "smoke", "--dir", str(tmp_path / "busy"), check=False)
    assert proc.returncode == 2 and "not empty" in proc.stderr
    proc = cli("quickstart", "--preset", "smoke", "--dir", str(tmp_path / "new"), "sft.max_stepz=3", check=False)
    assert proc.returncode == 2 and "did you mean 'max_steps'" in proc.stderr
    assert not (tmp_path / "new").exists()  # nothing half-written
