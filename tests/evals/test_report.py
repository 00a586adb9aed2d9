"""Reports: the JSON a program reads and the self-contained HTML page a person reads; history across versions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from helpers import CLI

SUITE = {
    "name": "chat-kpis",
    "generation": {"max_new_tokens": 24},
    "kpis": {
        "exact": {"path": "held.jsonl", "format": "prompt", "metric": "exact_match", "target": 0.5},
        "chrf": {"path": "held.jsonl", "format": "prompt", "metric": "chrf", "gate": {"max_regression": 0.1}},
        "ppl": {"path": "docs.jsonl", "format": "text", "metric": "perplexity", "retention": True},
    },
}


@pytest.fixture(scope="module")
def reported(tmp_path_factory, tiny_chat_model):
    """chat@v1 (untrained) gated against chat@champion (= the trained chat@v2), through the Python service verbs."""
    from weightsmith.evals.gate import run_gate
    from weightsmith.evals.suite import load_suite
    from weightsmith.workspace import Workspace
    from weightsmith.workspace.aliases import promote
    from weightsmith.workspace.registry import register_version

    root = tmp_path_factory.mktemp("report")
    ws = Workspace.init(root)
    config = AutoConfig.from_pretrained(tiny_chat_model.path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        AutoModelForCausalLM.from_config(config).save_pretrained(root / "untrained")
    AutoTokenizer.from_pretrained(tiny_chat_model.path).save_pretrained(root / "untrained")
    register_version(ws, "chat", root / "untrained", stage="pretrain")
    register_version(ws, "chat", Path(tiny_chat_model.path), stage="sft")
    held = [{"prompt": [{"role": "user", "content": q}], "answer": a} for q, a in tiny_chat_model.chats.items()]
    (root / "held.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held))
    (root / "docs.jsonl").write_text("".join(json.dumps({"text": a}) + "\n" for a in tiny_chat_model.chats.values()))
    suite = load_suite(SUITE, base_dir=root)

    crowned = run_gate(ws, suite, "chat@v2", "chat@champion", device="cpu")
    promote(ws, "chat@v2", "champion", actor="test")
    refused = run_gate(ws, suite, "chat@v1", "chat@champion", device="cpu")
    assert crowned["passed"] and not refused["passed"]
    return CLI(root), refused


def test_report_json_has_kpis_the_gate_baseline_worst_examples_and_history(reported, tiny_chat_model):
    cli, refused = reported
    doc = cli.json("eval", "report", str(refused["runs"]["candidate"]))

    assert doc["run"]["model"] == "chat@v1" and set(doc["run"]["kpis"]) == {"exact", "chrf", "ppl"}
    assert doc["gate"]["gate"] == refused["gate"] and doc["gate"]["passed"] is False
    assert doc["baseline"]["model"] == "chat@v2"
    worst = doc["worst"]["exact"]
    assert len(worst) == len(tiny_chat_model.chats)  # the babbling model fails every one
    assert all(w["score"] == 0.0 and w["baseline_score"] == 1.0 for w in worst)
    assert {w["baseline_prediction"] for w in worst} == set(tiny_chat_model.chats.values())
    assert [v["version"] for v in doc["history"]["versions"]] == ["chat@v1", "chat@v2"]


def test_html_report_is_self_contained_and_shows_every_kpi(reported, tiny_chat_model, tmp_path):
    cli, refused = reported
    out = tmp_path / "report.html"
    doc = cli.json("eval", "report", str(refused["runs"]["candidate"]), "--html", str(out))
    assert doc["html"] == str(out)
    page = out.read_text()

    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    for kpi in ("exact", "chrf", "ppl"):
        assert re.search(rf"<tr><td>{kpi}( <span class='muted'>\(retention\)</span>)?</td>", page), kpi
    assert "REFUSED" in page and "chat@v1" in page and "chat@v2" in page
    assert page.count("<svg") >= 3  # a plot per KPI
    assert "Worst failing examples" in page and "user: hi" in page  # prompts shown as the conversation
    assert tiny_chat_model.chats["hi"] in page  # the baseline's answer next to the failure
    # Nothing fetched from anywhere: no scripts, stylesheets, fonts, images or URLs.
    assert not re.search(r"<script|<link|<img|@import|url\(|https?://", page)


def test_history_lists_each_versions_kpis(reported):
    cli, _ = reported
    doc = cli.json("eval", "history", "chat")
    assert doc["model"] == "chat" and doc["suites"] == ["chat-kpis"]
    v1, v2 = doc["versions"]
    assert v1["kpis"]["exact"]["value"] == 0.0 and v2["kpis"]["exact"]["value"] == 1.0
    assert v2["aliases"] == ["champion"] and v1["aliases"] == []
    assert v1["kpis"]["ppl"]["value"] > v2["kpis"]["ppl"]["value"]
    proc = cli("eval", "report", "999", check=False)
    assert proc.returncode == 2 and "no eval run 999" in proc.stderr
