"""Fifty rows with one problem read as one sentence, and rows of another format name that format."""

from __future__ import annotations

import json

import pytest

from weightsmith.data.formats import summarize_errors, validate

ROWS = {
    "chat": {"messages": [{"role": "user", "content": "Which depot?"}, {"role": "assistant", "content": "North."}]},
    "preference": {"prompt": "Which depot?", "chosen": "North.", "rejected": "No idea."},
    "text": {"text": "The north depot opens at six."},
}


@pytest.mark.parametrize("given, meant", [("prompt", "chat"), ("preference", "chat"), ("text", "chat"),
                                          ("chat", "preference"), ("chat", "text")])
def test_rows_of_another_format_name_it(tmp_path, given, meant):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(ROWS[meant]) + "\n" for _ in range(3)))
    errors = validate(path, given).errors
    assert len(errors) == 3  # one problem a row, however many keys it misses
    assert errors[0].startswith(f"{path}:1: the row has ")
    assert f"like a {meant} row, not a {given} row" in errors[0]
    assert errors[0].endswith(f"add the file with --format {meant} (in a pipeline or suite: format: {meant})")


def test_a_misspelt_key_is_still_a_misspelling_not_another_format(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"promt": "Which depot?", "answer": "north"}) + "\n")
    assert validate(path, "prompt").errors == [f"{path}:1: missing key 'prompt' (is 'promt' a misspelling of it?)"]


def test_summary_counts_and_names_the_first_lines():
    errors = [f"a.jsonl:{n}: missing key 'prompt'" for n in range(1, 51)]
    errors += ["a.jsonl:51: invalid JSON at column 1: Expecting value", "b.jsonl: the file is empty",
               "b.jsonl:2: missing key 'prompt'", "b.jsonl:3: missing key 'prompt'"]
    assert summarize_errors(errors) == [
        "a.jsonl: lines 1, 2, 3, 4, 5 and 45 more (50 rows): missing key 'prompt'",
        "a.jsonl:51: invalid JSON at column 1: Expecting value",
        "b.jsonl: the file is empty",
        "b.jsonl: lines 2, 3 (2 rows): missing key 'prompt'",
    ]
    assert summarize_errors([]) == []
