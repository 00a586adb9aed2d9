"""Gates through the real CLI: a worse candidate is refused and the alias stays; a better one passes.

Two versions of one tiny model: chat@v1 is the architecture freshly initialised (it babbles),
chat@v2 the same architecture after a few optimizer steps on the answers (it answers).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from helpers import CLI

SUITE = """
name: chat-kpis
generation: {max_new_tokens: 24}
gate: {alpha: 0.05}
kpis:
  exact: {path: held.jsonl, format: prompt, metric: exact_match, target: 0.5, gate: {max_regression: 0.1}}
  chrf:  {path: held.jsonl, format: prompt, metric: chrf}
  ppl:   {path: docs.jsonl, format: text, metric: perplexity, retention: true, gate: {max_regression: "20%"}}
"""
QUIET = {"OMP_NUM_THREADS": "1"}  # one OpenMP thread in the CLI's process: two spin against each other on 2 cores


def save_untrained_copy(trained_dir: str, dest: Path) -> Path:
    """The same architecture and tokenizer as ``trained_dir``, with fresh random weights."""
    config = AutoConfig.from_pretrained(trained_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(dest)
    AutoTokenizer.from_pretrained(trained_dir).save_pretrained(dest)
    return dest


@pytest.fixture(scope="module")
def gated(tmp_path_factory, tiny_chat_model):
    from weightsmith.workspace import Workspace
    from weightsmith.workspace.registry import register_version

    root = tmp_path_factory.mktemp("gate")
    ws = Workspace.init(root)
    untrained = save_untrained_copy(tiny_chat_model.path, root / "untrained")
    register_version(ws, "chat", untrained, stage="pretrain")  # chat@v1
    register_version(ws, "chat", Path(tiny_chat_model.path), stage="sft")  # chat@v2
    held = [{"prompt": [{"role": "user", "content": q}], "answer": a} for q, a in tiny_chat_model.chats.items()]
    (root / "held.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held))
    docs = [{"text": a} for a in tiny_chat_model.chats.values()]
    (root / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in docs))
    (root / "suite.yaml").write_text(SUITE)
    return CLI(root)


def gate(cli: CLI, candidate: str, baseline: str | None = None) -> tuple[int, dict]:
    args = ["gate", "suite.yaml", "--candidate", candidate, *(["--baseline", baseline] if baseline else []), "--json"]
    proc = cli(*args, check=False, env=QUIET)
    assert proc.returncode in (0, 3), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def count(cli: CLI, table: str) -> int:
    return sqlite3.connect(Path(cli.cwd) / ".weightsmith" / "weightsmith.db").execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def rule(doc: dict, kpi: str, name: str) -> dict:
    return next(r for r in doc["rules"] if r["kpi"] == kpi and r["rule"] == name)


def test_gates_crown_a_first_champion_refuse_a_worse_one_and_pass_a_better_one(gated):
    cli = gated

    # No champion yet: floors only, and the babbling v1 misses the floor.
    code, doc = gate(cli, "chat@v1", "chat@champion")
    assert code == 3 and doc["passed"] is False and doc["floors_only"] and doc["baseline"] is None
    assert "no 'champion' yet" in doc["note"] and "floors only" in doc["note"]
    assert [(r["kpi"], r["rule"], r["passed"]) for r in doc["rules"]] == [("exact", "floor", False)]

    # The trained v2 meets it: a first champion is crowned without --force.
    code, doc = gate(cli, "chat@v2", "chat@champion")
    assert code == 0 and doc["passed"] and doc["candidate"] == "chat@v2"
    assert rule(doc, "exact", "floor") == {**rule(doc, "exact", "floor"), "value": 1.0, "threshold": 0.5, "passed": True}
    promoted = cli.json("models", "promote", "chat@v2", "--alias", "champion")
    assert promoted["moved"] and not promoted["forced"] and promoted["gate"] == doc["gate"]
    assert cli.json("models", "show", "chat@champion")["ref"] == "chat@v2"

    # v1 against the champion: every comparison is listed with its numbers, and it is refused.
    runs_before = count(cli, "eval_runs")
    code, doc = gate(cli, "chat@v1", "chat@champion")
    assert code == 3 and not doc["passed"] and doc["baseline"] == "chat@v2" and doc["alias"] == "champion"
    assert count(cli, "eval_runs") == runs_before  # both versions' runs of this suite were reused
    for r in doc["rules"]:
        assert {"kpi", "rule", "value", "baseline", "p_value", "passed"} <= set(r)
    regression = rule(doc, "exact", "max_regression")
    assert regression["value"] == 0.0 and regression["baseline"] == 1.0 and regression["threshold"] == 0.1 and not regression["passed"]
    chrf = rule(doc, "chrf", "paired_test")  # a graded score: the paired bootstrap
    assert chrf["p_value"] < 0.05 and not chrf["passed"] and "paired bootstrap" in chrf["detail"]
    forgetting = rule(doc, "ppl", "max_regression")
    assert forgetting["retention"] and forgetting["value"] > forgetting["baseline"] and not forgetting["passed"]
    assert "McNemar" in rule(doc, "exact", "paired_test")["detail"]

    proc = cli("models", "promote", "chat@v1", "--alias", "champion", check=False)
    assert proc.returncode == 2 and f"its latest gate, #{doc['gate']}, refused it" in proc.stderr
    assert cli.json("models", "show", "chat@champion")["ref"] == "chat@v2"  # unchanged

    # A better candidate against a worse holder passes every comparison and may take the alias.
    cli("models", "promote", "chat@v1", "--alias", "staging", "--force", "--reason", "staging starts from the base model")
    code, doc = gate(cli, "chat@v2", "chat@staging")
    assert code == 0 and doc["passed"] and doc["baseline"] == "chat@v1" and not doc["floors_only"]
    assert {r["rule"] for r in doc["rules"]} == {"floor", "max_regression", "paired_test"}
    assert rule(doc, "ppl", "max_regression")["value"] < rule(doc, "ppl", "max_regression")["baseline"]
    promoted = cli.json("models", "promote", "chat@v2", "--alias", "staging")
    assert promoted["moved"] and promoted["previous"] == "chat@v1" and promoted["gate"] == doc["gate"]


def test_gate_exit_codes_and_human_output(gated):
    proc = gated("gate", "suite.yaml", "--candidate", "chat@v2", check=False, env=QUIET)
    assert proc.returncode == 0 and "PASSED" in proc.stdout and "floors only" in proc.stdout
    proc = gated("gate", "suite.yaml", "--candidate", "chat@v1", check=False, env=QUIET)
    assert proc.returncode == 3 and "REFUSED" in proc.stderr and "exact floor" in proc.stderr


def test_a_baseline_that_does_not_exist_is_bad_input(gated):
    from weightsmith.errors import UserError
    from weightsmith.evals.gate import run_gate
    from weightsmith.workspace import Workspace

    # Once a champion exists, a near-miss of its name is a typo, not a first promotion.
    gated.json("models", "promote", "chat@v2", "--alias", "champion", "--force", "--reason", "set up the test")
    proc = gated("gate", "suite.yaml", "--candidate", "chat@v2", "--baseline", "chat@champoin", check=False)
    assert proc.returncode == 2 and "has no alias 'champoin' (did you mean 'champion'?)" in proc.stderr
    ws = Workspace.open(gated.cwd)
    for baseline, expected in [("chta@champion", r"no model named 'chta' \(did you mean 'chat'\?\)"), ("chat@v7", "has no version v7")]:
        with pytest.raises(UserError, match=expected):
            run_gate(ws, Path(gated.cwd) / "suite.yaml", "chat@v2", baseline)
