"""Suite YAML: defaults filled in, and every mistake reported as one sentence naming the key."""

from __future__ import annotations

import json
import sqlite3
import textwrap
from pathlib import Path

import pytest

from weightsmith.errors import UserError
from weightsmith.evals.suite import load_suite

from helpers import EXAMPLES


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def held(tmp_path: Path) -> Path:
    rows = [{"prompt": "2+2=", "answer": "4"}, {"prompt": "3+3=", "answer": "6"}]
    path = tmp_path / "held.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def error_of(source, **kw) -> str:
    with pytest.raises(UserError) as caught:
        load_suite(source, **kw)
    return str(caught.value)


def test_example_suite_loads_with_defaults_merged_and_directions():
    suite = load_suite(EXAMPLES / "tiny" / "suite.yaml")

    assert suite.name == "dispatch-kpis"
    assert list(suite.kpis) == ["answer_match", "answer_chrf", "latency", "handbook_perplexity"]
    match, ppl, latency = suite.kpis["answer_match"], suite.kpis["handbook_perplexity"], suite.kpis["latency"]
    assert match.kind == "generate" and match.direction == "higher" and match.aggregate == "mean"
    assert match.prompt.system == "You are the dispatch desk assistant."  # suite-level default
    assert match.generation.max_new_tokens == 16 and match.gate.max_regression == 0.1 and match.gate.alpha == 0.05
    assert Path(match.path) == (EXAMPLES / "tiny" / "data" / "prompts.jsonl").resolve()
    assert match.dataset_name == "prompts"
    assert ppl.kind == "perplexity" and ppl.direction == "lower" and ppl.aggregate == "perplexity" and ppl.retention
    assert ppl.max_regression(200.0) == pytest.approx(20.0)  # "10%" of the baseline
    assert latency.direction == "lower" and latency.aggregate == "p95" and latency.gate.paired_test is False


def test_unknown_metric_suggests_the_closest_name(held):
    message = error_of({"name": "s", "kpis": {"acc": {"path": str(held), "format": "prompt", "metric": "exact_mach"}}})
    assert "kpis.acc.metric" in message and "unknown metric 'exact_mach'" in message
    assert "did you mean 'exact_match'" in message

    message = error_of({"name": "s", "kpis": {"ppl": {"data": "docs", "metric": "perplexty"}}})
    assert "did you mean 'perplexity'" in message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"agregate": "mean"}, "kpis.acc.agregate: unknown key (did you mean 'aggregate'?)"),
        ({"generation": {"max_tokens": 8}}, "kpis.acc.generation.max_tokens: unknown key (did you mean 'max_new_tokens'?)"),
        ({"gate": {"alpha": 2}}, "kpis.acc.gate.alpha"),
        ({"gate": {"max_regression": "5 percent"}}, "a percentage like '5%'"),
        ({"aggregate": "perplexity"}, "kpis.acc.aggregate: 'perplexity' is the aggregate of the perplexity metric"),
        ({"data": "held@v1"}, "either as 'data: NAME@vN'"),
        ({"format": "text"}, "metric 'exact_match' reads prompt or chat rows, not 'text'"),
        ({"format": "preference"}, "metric 'exact_match' reads prompt or chat rows, not 'preference'"),
        ({"prompt": {"template": "Q: {question"}}, "kpis.acc.prompt.template: not a valid format string"),
    ],
)
def test_kpi_mistakes_name_the_key(held, body, expected):
    kpi = {"path": str(held), "format": "prompt", "metric": "exact_match", **body}
    assert expected in error_of({"name": "s", "kpis": {"acc": kpi}})


def test_suite_level_mistakes(tmp_path, held):
    assert "unknown key 'kpi' (did you mean 'kpis'?)" in error_of({"name": "s", "kpi": {}})
    assert "kpis: give a non-empty mapping" in error_of({"name": "s", "kpis": {}})
    assert "metric: required key is missing" in error_of({"name": "s", "kpis": {"a": {"path": str(held), "format": "prompt"}}})
    missing = error_of({"name": "s", "kpis": {"a": {"path": "nope.jsonl", "format": "prompt", "metric": "chrf"}}}, base_dir=tmp_path)
    assert "kpis.a.path" in missing and "does not exist" in missing

    broken = write(tmp_path / "broken.yaml", "name: s\nkpis:\n  a: [unclosed\n")
    message = error_of(broken)
    assert message.startswith(f"{broken}:") and "not valid YAML" in message


def test_perplexity_needs_text_rows(held):
    message = error_of({"name": "s", "kpis": {"ppl": {"path": str(held), "format": "prompt", "metric": "perplexity"}}})
    assert "kpis.ppl.format: metric 'perplexity' reads text rows" in message


def test_retention_suite_kpis_are_merged_prefixed_and_marked(tmp_path, held):
    write(tmp_path / "general.yaml", f"""
        name: general
        kpis:
          acc: {{path: {held}, format: prompt, metric: exact_match, target: 0.5}}
    """)
    main = write(tmp_path / "main.yaml", f"""
        name: main
        retention_suite: general.yaml
        kpis:
          acc: {{path: {held}, format: prompt, metric: chrf}}
    """)
    suite = load_suite(main)
    assert list(suite.kpis) == ["acc", "general/acc"]
    assert suite.kpis["general/acc"].retention and not suite.kpis["acc"].retention
    assert suite.kpis["general/acc"].target == 0.5

    write(tmp_path / "general.yaml", f"""
        name: general
        retention_suite: main.yaml
        kpis:
          acc: {{path: {held}, format: prompt, metric: exact_match}}
    """)
    assert "retention_suite in a loop" in error_of(main)


def test_a_users_metric_is_a_plain_function(tmp_path, held, monkeypatch):
    (tmp_path / "acme_metrics.py").write_text(
        "def starts_right(completions, answer, **_):\n"
        "    return [float(c.startswith(a)) for c, a in zip(completions, answer)]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    suite = load_suite({"name": "s", "kpis": {"a": {"path": str(held), "format": "prompt", "metric": "acme_metrics:starts_right"}}})
    assert suite.kpis["a"].metric == "acme_metrics:starts_right" and suite.kpis["a"].direction == "higher"

    message = error_of({"name": "s", "kpis": {"a": {"path": str(held), "format": "prompt", "metric": "acme_metrics:nope"}}})
    assert "kpis.a.metric" in message and "has no function 'nope'" in message


def _fake_model_dir(path: Path) -> Path:
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (path / "model.safetensors").write_bytes(b"")
    return path


def test_dataset_of_the_wrong_format_or_columns_exits_2_and_records_nothing(ws, cli, tmp_path):
    from weightsmith.workspace.registry import register_version

    from weightsmith.data.ingest import add_dataset

    register_version(ws, "m", _fake_model_dir(tmp_path / "model"), stage="sft")  # never loaded: checks come first
    add_dataset(ws, "tasks", EXAMPLES / "tiny" / "data" / "tasks.jsonl", "chat")
    add_dataset(ws, "prompts", EXAMPLES / "tiny" / "data" / "prompts.jsonl", "prompt")

    wrong_format = write(tmp_path / "wrong.yaml", "name: s\nkpis:\n  ppl: {data: tasks@v1, metric: perplexity}\n")
    proc = cli("eval", str(wrong_format), "--model", "m@v1", check=False)
    assert proc.returncode == 2, proc.stderr
    assert "kpis.ppl.data: tasks@v1 holds chat data, but metric 'perplexity' reads text" in proc.stderr
    assert "Evaluating" not in proc.stderr  # refused before it says it started

    no_column = write(tmp_path / "col.yaml", "name: s\nkpis:\n  re: {data: prompts, metric: regex_match}\n")
    proc = cli("eval", str(no_column), "--model", "m@v1", "--json", check=False)
    assert proc.returncode == 2
    error = json.loads(proc.stdout)["error"]
    assert ("metric 'regex_match' (weightsmith.evals.metrics.regex_match) reads the column 'pattern', but row 1 of "
            "prompts@v1 has the columns answer, prompt, without 'pattern'") in error
    assert "columns:" in error and error.count(". ") == 0  # one sentence

    chat_no_column = write(tmp_path / "chatcol.yaml", "name: s\nkpis:\n  re: {data: tasks, metric: regex_match}\n")
    error = json.loads(cli("eval", str(chat_no_column), "--model", "m@v1", "--json", check=False).stdout)["error"]
    assert ("reads the column 'pattern', but row 1 of tasks@v1 has the columns answer, prompt (chat rows give 'prompt' "
            "and 'answer', the last assistant turn), without 'pattern'") in error

    unknown = write(tmp_path / "unknown.yaml", "name: s\nkpis:\n  acc: {data: promts, metric: exact_match}\n")
    proc = cli("eval", str(unknown), "--model", "m@v1", check=False)
    assert proc.returncode == 2 and "no dataset named 'promts' (did you mean 'prompts'?)" in proc.stderr

    db = sqlite3.connect(Path(cli.cwd) / ".weightsmith" / "weightsmith.db")
    assert db.execute("SELECT count(*) FROM eval_runs").fetchone()[0] == 0
