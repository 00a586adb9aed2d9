"""`weightsmith eval`: a suite on a real tiny model stores every example, and bad input records nothing."""

from __future__ import annotations

import json
import socket
import sqlite3
from pathlib import Path

import pytest

from weightsmith.errors import UserError
from weightsmith.evals.generate import perplexity
from weightsmith.evals.suite import load_suite

from helpers import CLI

SUITE = """
name: chat-kpis
generation: {max_new_tokens: 24, batch_size: 2}
kpis:
  exact:  {path: held.jsonl, format: prompt, metric: exact_match, target: 0.5}
  chrf:   {path: held.jsonl, format: prompt, metric: chrf}
  slow:   {path: held.jsonl, format: prompt, metric: latency, aggregate: p95}
  ppl:    {path: docs.jsonl, format: text, metric: perplexity, retention: true}
"""


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_chat_model):
    """One workspace, the tiny chat model as chat@v1, and one `weightsmith eval` of a suite over its own questions."""
    from weightsmith.workspace import Workspace
    from weightsmith.workspace.registry import register_version

    root = tmp_path_factory.mktemp("eval_run")
    ws = Workspace.init(root)
    register_version(ws, "chat", Path(tiny_chat_model.path), stage="sft")
    held = [{"prompt": [{"role": "user", "content": q}], "answer": a} for q, a in tiny_chat_model.chats.items()]
    (root / "held.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held))
    docs = [{"text": f"{q}{a}"} for q, a in tiny_chat_model.plain.items()] + [{"text": a} for a in tiny_chat_model.chats.values()]
    (root / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in docs))
    (root / "suite.yaml").write_text(SUITE)
    cli = CLI(root)
    # One OpenMP thread in the CLI's process too: two spinning threads on a busy 2-core box crawl.
    proc = cli("eval", "suite.yaml", "--model", "chat@v1", "--json", env={"OMP_NUM_THREADS": "1"})
    return cli, ws, json.loads(proc.stdout), proc.stderr


def rows(cli: CLI, sql: str) -> list[tuple]:
    return sqlite3.connect(Path(cli.cwd) / ".weightsmith" / "weightsmith.db").execute(sql).fetchall()


def test_eval_json_names_the_version_and_each_kpi(evaluated, tiny_chat_model):
    _, _, doc, _ = evaluated
    assert doc["model"] == "chat@v1" and isinstance(doc["run"], int)
    for name in ("exact", "chrf", "slow", "ppl"):
        assert {"value", "ci", "n"} <= set(doc["kpis"][name]), name
    exact = doc["kpis"]["exact"]
    assert exact["value"] == 1.0 and exact["n"] == len(tiny_chat_model.chats) and exact["met_target"] is True
    low, high = exact["ci"]
    assert 0 < low < 1.0 and high == pytest.approx(1.0)  # Wilson: 3 of 3 is not certainty
    assert exact["dataset"] == "held@v1" and doc["kpis"]["ppl"]["dataset"] == "docs@v1"  # suite files became versions
    assert doc["kpis"]["chrf"]["value"] == pytest.approx(1.0)
    assert doc["kpis"]["slow"]["value"] > 0 and doc["kpis"]["slow"]["direction"] == "lower"


def test_eval_prints_no_library_progress_bars(evaluated):
    *_, stderr = evaluated
    assert "Loading weights" not in stderr and "it/s]" not in stderr, stderr[-2000:]


def test_every_example_is_stored_with_prediction_score_and_timing(evaluated, tiny_chat_model):
    cli, _, doc, _ = evaluated
    examples = rows(cli, f"SELECT prediction, reference, score, tokens, seconds, finish_reason FROM eval_examples "
                         f"WHERE run_id = {doc['run']} AND kpi = 'exact' ORDER BY position")
    assert [(e[0], json.loads(e[1])["answer"], e[2]) for e in examples] == [(a, a, 1.0) for a in tiny_chat_model.chats.values()]
    assert all(e[3] > 0 and e[4] > 0 and e[5] == "stop" for e in examples)
    n = len(tiny_chat_model.chats)
    counts = dict(rows(cli, f"SELECT kpi, count(*) FROM eval_examples WHERE run_id = {doc['run']} GROUP BY kpi"))
    assert counts == {"exact": n, "chrf": n, "slow": n, "ppl": n + len(tiny_chat_model.plain)}
    # exact and chrf read the same prompts with the same settings: generated once, scored twice.
    details = {k: json.loads(d) for k, d in rows(cli, f"SELECT kpi, details FROM eval_kpi_results WHERE run_id = {doc['run']}")}
    assert details["chrf"].get("generation_shared") and not details["exact"].get("generation_shared")


def test_perplexity_kpi_is_the_corpus_perplexity(evaluated, tiny_chat_model):
    cli, _, doc, _ = evaluated
    texts = [json.loads(line)["text"] for line in (Path(cli.cwd) / "docs.jsonl").read_text().splitlines()]
    expected = perplexity(tiny_chat_model.path, texts, device="cpu")["value"]
    ppl = doc["kpis"]["ppl"]
    assert ppl["value"] == pytest.approx(expected, rel=1e-4)
    assert ppl["ci"][0] <= ppl["value"] <= ppl["ci"][1] and ppl["retention"] and ppl["direction"] == "lower"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed when the block ends: connections to it are refused


def test_a_failing_judge_endpoint_is_one_clear_error_after_retries_and_records_nothing(evaluated):
    from weightsmith.evals.run import run_suite

    cli, ws, _, _ = evaluated
    runs_before = rows(cli, "SELECT count(*) FROM eval_runs")
    suite = {"name": "judged", "generation": {"max_new_tokens": 4}, "kpis": {
        "exact": {"path": "held.jsonl", "format": "prompt", "metric": "exact_match"},
        "polite": {"path": "held.jsonl", "format": "prompt", "metric": "llm_judge", "options": {
            "endpoint": f"http://127.0.0.1:{_closed_port()}", "model": "judge", "rubric": "Is it polite?",
            "max_retries": 2, "backoff_s": 0.01}},
    }}
    with pytest.raises(UserError, match=r"kpis.polite: LLM judge endpoint .* failed after 3 attempts"):
        run_suite(ws, load_suite(suite, base_dir=cli.cwd), "chat@v1", device="cpu")
    assert rows(cli, "SELECT count(*) FROM eval_runs") == runs_before


def test_a_users_metric_that_raises_is_reported_and_records_nothing(evaluated, tmp_path, monkeypatch):
    from weightsmith.evals.run import run_suite

    cli, ws, _, _ = evaluated
    runs_before = rows(cli, "SELECT count(*) FROM eval_runs")
    (tmp_path / "broken_metric.py").write_text("def score(completions, **_):\n    raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    suite = {"name": "custom", "generation": {"max_new_tokens": 4},
             "kpis": {"mine": {"path": "held.jsonl", "format": "prompt", "metric": "broken_metric:score"}}}
    with pytest.raises(UserError, match=r"kpis.mine: metric 'broken_metric:score' raised RuntimeError: boom"):
        run_suite(ws, load_suite(suite, base_dir=cli.cwd), "chat@v1", device="cpu")
    assert rows(cli, "SELECT count(*) FROM eval_runs") == runs_before


def test_lm_eval_task_without_the_harness_is_a_clear_error(evaluated):
    cli, _, _, _ = evaluated
    (Path(cli.cwd) / "harness.yaml").write_text("name: harness\nkpis:\n  arc: {lm_eval: {task: arc_easy, limit: 10}}\n")
    proc = cli("eval", "harness.yaml", "--model", "chat@v1", check=False)
    assert proc.returncode == 2
    assert "kpis.arc: lm-evaluation-harness is not installed" in proc.stderr and "pip install lm-eval" in proc.stderr


def test_eval_needs_a_model_and_names_a_missing_version(evaluated):
    cli, _, _, _ = evaluated
    proc = cli("eval", "suite.yaml", check=False)
    assert proc.returncode == 2 and "needs --model" in proc.stderr
    proc = cli("eval", "suite.yaml", "--model", "chat@v9", check=False)
    assert proc.returncode == 2 and "has no version v9" in proc.stderr
