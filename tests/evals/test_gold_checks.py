"""Gold values a metric cannot use as written are warned about, or refused, when the suite is prepared.

Issue 10's failing input: answers "+" and "-" under normalized_match, which normalization strips
to nothing. They are now compared as written; the suite says so before any generation.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from weightsmith.errors import UserError
from weightsmith.evals.run import prepare_suite
from weightsmith.evals.suite import load_suite

from helpers import CLI

SIGNS = [
    {"prompt": "Is 3 > 2? Answer + or -.", "answer": "+"},
    {"prompt": "Is 1 > 2? Answer + or -.", "answer": "-"},
    {"prompt": "Which depot?", "answer": ""},
    {"prompt": "Which depot?", "answer": "north"},
]


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def suite(tmp_path: Path, **kpis) -> object:
    return load_suite({"name": "s", "kpis": kpis}, base_dir=tmp_path)


def test_answers_that_normalize_to_nothing_and_empty_answers_are_warned_about(ws, tmp_path, caplog):
    write_rows(tmp_path / "signs.jsonl", SIGNS)
    spec = suite(tmp_path, signs={"path": "signs.jsonl", "format": "prompt", "metric": "normalized_match"},
                 exact={"path": "signs.jsonl", "format": "prompt", "metric": "exact_match"})
    with caplog.at_level(logging.WARNING):
        prepared = prepare_suite(ws, spec)
    assert prepared.warnings == [
        "suite: kpis.signs: rows 1, 2: 'answer' has no letter or digit (e.g. '+'), so normalized_match compares it "
        "as written (whitespace folded), not normalized.",
        "suite: kpis.signs: row 3: 'answer' is empty, and normalized_match matches nothing against an empty "
        "answer: such rows score 0.",
        # exact_match never normalizes: only the empty answer is worth a word.
        "suite: kpis.exact: row 3: 'answer' is empty, and exact_match matches nothing against an empty answer: "
        "such rows score 0.",
    ]
    assert [r.getMessage() for r in caplog.records] == [f"warning: {w}" for w in prepared.warnings]


def test_a_regex_pattern_that_matches_an_empty_text_is_refused_before_generation(ws, tmp_path):
    write_rows(tmp_path / "p.jsonl", [{"prompt": "Order id?", "pattern": r"#\d+"}, {"prompt": "Year?", "pattern": r"\d*"}])
    with pytest.raises(UserError, match=r"kpis.ids: row 2: regex_match: the pattern '\\\\d\*' matches an empty text"):
        prepare_suite(ws, suite(tmp_path, ids={"path": "p.jsonl", "format": "prompt", "metric": "regex_match"}))
    write_rows(tmp_path / "q.jsonl", [{"prompt": "Order id?"}])
    constant = {"path": "q.jsonl", "format": "prompt", "metric": "regex_match", "columns": {"pattern": ""}}
    with pytest.raises(UserError, match=r"kpis.ids: row 1: regex_match: the pattern '' matches an empty text"):
        prepare_suite(ws, suite(tmp_path, ids=constant))


def test_a_schema_that_accepts_any_json_is_warned_about_and_a_broken_one_refused(ws, tmp_path):
    write_rows(tmp_path / "j.jsonl", [{"prompt": "JSON please", "schema": {}}, {"prompt": "x", "schema": {"type": "object"}}])
    prepared = prepare_suite(ws, suite(tmp_path, js={"path": "j.jsonl", "format": "prompt", "metric": "json_schema_valid"}))
    assert prepared.warnings == [
        "suite: kpis.js: row 1: the schema accepts any JSON, so json_schema_valid only checks that the completion parses."
    ]
    write_rows(tmp_path / "k.jsonl", [{"prompt": "JSON please", "schema": {"type": "no-such-type"}}])
    with pytest.raises(UserError, match="kpis.js: row 1: json_schema_valid: the schema is not a valid JSON Schema"):
        prepare_suite(ws, suite(tmp_path, js={"path": "k.jsonl", "format": "prompt", "metric": "json_schema_valid"}))


def test_eval_prints_the_warning_and_scores_a_sign_answer_as_written(tmp_path, tiny_chat_model):
    from weightsmith.workspace import Workspace
    from weightsmith.workspace.registry import register_version

    ws = Workspace.init(tmp_path)
    register_version(ws, "chat", Path(tiny_chat_model.path), stage="sft")
    # The tiny model answers "hi" with "hello world": right for row 2, wrong for row 1's "+".
    rows = [{"prompt": [{"role": "user", "content": "hi"}], "answer": "+"},
            {"prompt": [{"role": "user", "content": "hi"}], "answer": "hello world"}]
    write_rows(tmp_path / "signs.jsonl", rows)
    (tmp_path / "suite.yaml").write_text(
        "name: signs\ngeneration: {max_new_tokens: 8}\n"
        "kpis:\n  signs: {path: signs.jsonl, format: prompt, metric: normalized_match}\n"
    )
    proc = CLI(tmp_path)("eval", "suite.yaml", "--model", "chat@v1", "--json", env={"OMP_NUM_THREADS": "1"})
    doc = json.loads(proc.stdout)
    assert doc["warnings"] == [
        f"{tmp_path / 'suite.yaml'}: kpis.signs: row 1: 'answer' has no letter or digit (e.g. '+'), so "
        "normalized_match compares it as written (whitespace folded), not normalized."
    ]
    assert f"warning: {doc['warnings'][0]}" in proc.stderr
    assert doc["kpis"]["signs"]["value"] == 0.5  # "hello world" matches its own answer only
