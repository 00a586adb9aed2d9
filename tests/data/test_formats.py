"""Data validation: every bad line reported as FILE:LINE: reason, good rows normalized."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from weightsmith.data.formats import (
    FORMATS,
    MAX_LISTED_ERRORS,
    Validated,
    approx_tokens,
    canonical_jsonl,
    validate,
)
from weightsmith.errors import UserError

FIXTURES = Path(__file__).parent / "fixtures"

USER = {"role": "user", "content": "What is 2+2?"}
ASSISTANT = {"role": "assistant", "content": "4"}


def _validate_lines(folder: Path, lines: list, fmt: str) -> Validated:
    """Validate rows written to a JSONL file in ``folder`` (dicts are dumped, strings written as is)."""
    path = folder / "rows.jsonl"
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    path.write_text(text + "\n", encoding="utf-8")
    return validate(path, fmt)


# One fixture per error kind. In each, line 1 is a good row and line 2 is blank, so the
# reported line number 3 proves blank lines are counted but not reported.
ERROR_CASES = [
    ("chat_invalid_json.jsonl", "chat", 3, ["invalid JSON at column", "Expecting"]),
    ("chat_not_object.jsonl", "chat", 3, ["JSON string, not an object"]),
    ("chat_unknown_role.jsonl", "chat", 3, ["'messages[1].role' is 'assitant'", "did you mean 'assistant'"]),
    ("chat_missing_assistant.jsonl", "chat", 3, ["no assistant message"]),
    ("chat_last_not_assistant.jsonl", "chat", 3, ["last message is from 'user'"]),
    ("chat_empty_content.jsonl", "chat", 3, ["'messages[0].content' is empty"]),
    ("chat_wrong_type.jsonl", "chat", 3, ["'messages[1].content' must be a string, got int"]),
    ("chat_missing_key.jsonl", "chat", 3, ["missing key 'messages'"]),
    ("chat_unknown_key.jsonl", "chat", 3, ["unknown key 'messsages'", "did you mean 'messages'"]),
    ("chat_duplicate_key.jsonl", "chat", 3, ["key 'messages' appears twice"]),
    ("chat_non_utf8.jsonl", "chat", 3, ["not valid UTF-8", "0xe9"]),
    ("preference_identical.jsonl", "preference", 3, ["'chosen' and 'rejected' are identical"]),
    ("preference_mixed_styles.jsonl", "preference", 3, ["'prompt' is a list here but a string at", ":1"]),
    ("prompt_missing_prompt.jsonl", "prompt", 3, ["missing key 'prompt'", "'promt'"]),
    ("prompt_reserved_column.jsonl", "prompt", 3, ["column 'completions' cannot be used"]),
    ("prompt_column_type.jsonl", "prompt", 3, ["'answer' is a number here but a string at", ":1"]),
    ("text_empty_text.jsonl", "text", 3, ["'text' is empty"]),
]


@pytest.mark.parametrize(("name", "fmt", "line", "words"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_each_error_kind_names_file_line_and_reason(name: str, fmt: str, line: int, words: list[str]) -> None:
    path = str(FIXTURES / name)
    result = validate(path, fmt)
    assert not result.ok()
    assert len(result.errors) == 1, result.errors  # one problem, one message: no cascades
    error = result.errors[0]
    assert error.startswith(f"{path}:{line}: "), error
    for word in words:
        assert word in error, error
    assert len(result.rows) == 1  # the good first row is still read


def test_over_the_length_limit_is_reported_and_max_chars_honoured() -> None:
    path = str(FIXTURES / "chat_too_long.jsonl")
    assert validate(path, "chat").ok()  # 300 characters is far under the default limit
    result = validate(path, "chat", max_chars=200)
    assert len(result.errors) == 1
    assert result.errors[0].startswith(f"{path}:3: ")
    assert "length limit" in result.errors[0] and "max_chars is 200" in result.errors[0]
    assert [r["messages"][1]["content"] for r in result.rows] == ["4"]


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("chat_empty.jsonl", ["the file is empty"]),
        ("chat_utf16.jsonl", ["UTF-16", "save it as UTF-8"]),
        ("chat_pretty_printed.jsonl", ["pretty-printed", "one JSON document"]),
    ],
)
def test_whole_file_problems_are_one_error_named_by_file(name: str, words: list[str]) -> None:
    path = str(FIXTURES / name)
    result = validate(path, "chat")
    assert len(result.errors) == 1, result.errors
    assert result.errors[0].startswith(f"{path}: ")
    for word in words:
        assert word in result.errors[0]
    assert result.rows == []


def test_bom_crlf_and_blank_lines_are_accepted() -> None:
    result = validate(FIXTURES / "chat_bom_blank_lines.jsonl", "chat")
    assert result.ok(), result.errors
    assert [r["messages"][1]["content"] for r in result.rows] == ["4", "four"]


def test_every_problem_in_a_row_is_listed(tmp_path: Path) -> None:
    line = {"messages": [{"role": "usr", "content": "hi"}, {"role": "assistant", "content": 3}], "id": 7}
    result = _validate_lines(tmp_path, [line], "chat")
    reasons = [e.split(": ", 1)[1] for e in result.errors]
    assert any("'messages[0].role' is 'usr'" in r and "did you mean 'user'" in r for r in reasons)
    assert any("'messages[1].content' must be a string, got int" in r for r in reasons)
    assert any("unknown key 'id'" in r and "'messages'" in r for r in reasons)
    assert all(e.startswith(f"{result.sources[0]}:1: ") for e in result.errors)


# ---------------------------------------------------------------------------- happy paths


def test_chat_rows_are_normalized_with_tools_and_duplicates_counted() -> None:
    result = validate(FIXTURES / "chat_ok.jsonl", "chat")
    assert result.ok(), result.errors
    assert result.format == "chat"
    assert len(result.rows) == 4
    assert result.rows[0] == {"messages": [USER, ASSISTANT]}
    tool_row = result.rows[2]
    assert tool_row["tools"][0]["function"]["name"] == "add"
    # A tool-calling assistant turn without text gets content "" so chat templates can render it.
    assert tool_row["messages"][1]["content"] == ""
    assert tool_row["messages"][1]["tool_calls"][0]["function"]["name"] == "add"
    assert tool_row["messages"][2] == {"role": "tool", "content": "4", "tool_call_id": "c1"}
    # Line 5 is line 1 with the keys in another order: kept, and counted as a duplicate.
    assert result.rows[3] == result.rows[0]
    assert result.duplicates == 1


def test_plain_preference_pairs() -> None:
    result = validate(FIXTURES / "preference_plain.jsonl", "preference")
    assert result.ok(), result.errors
    assert result.rows == [
        {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
        {"prompt": "1+3?", "chosen": "4", "rejected": "3"},
    ]


def test_conversational_preference_pairs() -> None:
    result = validate(FIXTURES / "preference_conversational.jsonl", "preference")
    assert result.ok(), result.errors
    assert result.rows == [
        {"prompt": [USER], "chosen": [ASSISTANT], "rejected": [{"role": "assistant", "content": "5"}]}
    ]


def test_openai_preference_is_converted_to_trl_conversational() -> None:
    result = validate(FIXTURES / "preference_openai.jsonl", "preference")
    assert result.ok(), result.errors
    first, second = result.rows
    assert first == {
        "prompt": [USER],
        "chosen": [ASSISTANT],
        "rejected": [{"role": "assistant", "content": "5"}],
        "tools": [{"type": "function", "function": {"name": "add"}}],
    }
    assert second["prompt"][0] == {"role": "system", "content": "Be brief."}
    assert second["rejected"] == [{"role": "assistant", "content": "Four, I think."}]


def test_openai_and_trl_layouts_of_the_same_pair_are_duplicates(tmp_path: Path) -> None:
    trl = {"prompt": [USER], "chosen": [ASSISTANT], "rejected": [{"role": "assistant", "content": "5"}]}
    openai = {
        "input": {"messages": [USER]},
        "preferred_output": [ASSISTANT],
        "non_preferred_output": [{"role": "assistant", "content": "5"}],
    }
    result = _validate_lines(tmp_path, [trl, openai], "preference")
    assert result.ok(), result.errors
    assert result.duplicates == 1


def test_openai_preference_errors_name_openai_keys(tmp_path: Path) -> None:
    row = {
        "input": {"messages": [USER]},
        "preferred_output": [{"role": "user", "content": "4"}],
        "non_preferred_output": [ASSISTANT],
    }
    result = _validate_lines(tmp_path, [row], "preference")
    assert len(result.errors) == 1
    assert "'preferred_output[0].role' is 'user'" in result.errors[0]
    assert "'input.messages'" in result.errors[0]


def test_prompt_rows_keep_extra_reward_columns() -> None:
    result = validate(FIXTURES / "prompt_ok.jsonl", "prompt")
    assert result.ok(), result.errors
    assert result.rows == [
        {"prompt": "2+2?", "answer": "4", "difficulty": 1, "tags": ["math"]},
        {"prompt": "Name a prime.", "answer": None, "difficulty": 2.5, "tags": []},
    ]
    conversational = validate(FIXTURES / "prompt_conversational.jsonl", "prompt")
    assert conversational.ok(), conversational.errors
    assert conversational.rows == [{"prompt": [USER], "answer": "4"}]


def test_text_jsonl() -> None:
    result = validate(FIXTURES / "text_ok.jsonl", "text")
    assert result.ok(), result.errors
    assert result.rows == [{"text": "Hello world."}, {"text": "Second document.\nWith two lines."}]


def test_text_folder_reads_txt_and_md_recursively_in_sorted_order() -> None:
    folder = str(FIXTURES / "corpus")
    result = validate(folder, "text")
    assert result.ok(), result.errors
    # .py is ignored, the hidden folder is skipped, CRLF becomes LF.
    assert result.sources == [f"{folder}/a.txt", f"{folder}/notes/b.md"]
    assert result.rows == [{"text": "First document.\n"}, {"text": "# Notes\nSecond document.\n"}]


def test_single_text_document_is_one_row(tmp_path: Path) -> None:
    doc = tmp_path / "handbook.md"
    doc.write_text("# Handbook\n\nBe kind.\n", encoding="utf-8")
    result = validate(doc, "text")
    assert result.ok()
    assert result.rows == [{"text": "# Handbook\n\nBe kind.\n"}]
    assert result.sources == [str(doc)]


def test_text_folder_problems_are_named_by_file(tmp_path: Path) -> None:
    (tmp_path / "good.txt").write_text("Some text.\n")
    (tmp_path / "empty.md").write_text("  \n")
    result = validate(tmp_path, "text")
    assert result.errors == [f"{tmp_path}/empty.md: the file is empty; add text or remove it"]
    assert result.rows == [{"text": "Some text.\n"}]


def test_non_utf8_text_document_names_the_line() -> None:
    path = str(FIXTURES / "text_doc_non_utf8.txt")
    result = validate(path, "text")
    assert result.errors == [f"{path}: not valid UTF-8 at line 2 (byte 0xe9); save the file as UTF-8"]


def test_folder_without_text_files_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("a,b\n")
    result = validate(tmp_path, "text")
    assert len(result.errors) == 1
    assert result.errors[0].startswith(f"{tmp_path}: no .txt or .md files")
    assert ".csv" in result.errors[0]


def test_folder_of_jsonl_shards_for_chat(tmp_path: Path) -> None:
    (tmp_path / "b.jsonl").write_text(json.dumps({"messages": [USER, ASSISTANT]}) + "\n")
    (tmp_path / "a.jsonl").write_text(json.dumps({"messages": [USER]}) + "\n")
    result = validate(tmp_path, "chat")
    assert result.sources == [f"{tmp_path}/a.jsonl", f"{tmp_path}/b.jsonl"]
    assert result.errors == [f"{tmp_path}/a.jsonl:1: no assistant message; chat SFT learns from assistant "
                             "turns, so each row needs at least one"]
    assert len(result.rows) == 1


# ---------------------------------------------------------------------------- limits and edges


def test_error_listing_stops_at_the_limit_and_counts_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("not json\n" * (MAX_LISTED_ERRORS + 234))
    result = validate(path, "chat")
    assert len(result.errors) == MAX_LISTED_ERRORS + 1
    assert result.errors[MAX_LISTED_ERRORS - 1].startswith(f"{path}:{MAX_LISTED_ERRORS}: invalid JSON")
    assert "234 more errors not listed" in result.errors[-1]


def test_unpaired_surrogate_escape_is_reported_not_raised(tmp_path: Path) -> None:
    result = _validate_lines(tmp_path, ['{"text": "bad \\ud800 escape"}'], "text")
    assert len(result.errors) == 1 and "\\ud800" in result.errors[0]


def test_nan_is_not_json(tmp_path: Path) -> None:
    result = _validate_lines(tmp_path, ['{"prompt": "x", "score": NaN}'], "prompt")
    assert len(result.errors) == 1 and "NaN is not valid JSON" in result.errors[0]


def test_json_array_on_one_line_gets_a_conversion_hint(tmp_path: Path) -> None:
    result = _validate_lines(tmp_path, [json.dumps([{"text": "a"}, {"text": "b"}])], "text")
    assert "JSON list, not an object" in result.errors[0] and "jq -c" in result.errors[0]


def test_message_key_only_allowed_on_another_role_is_reported(tmp_path: Path) -> None:
    row = {"messages": [{"role": "user", "content": "hi", "tool_calls": []}, ASSISTANT]}
    result = _validate_lines(tmp_path, [row], "chat")
    assert len(result.errors) == 1
    assert "'messages[0].tool_calls' is only allowed on assistant messages" in result.errors[0]


# ---------------------------------------------------------------------------- user errors


def test_nonexistent_path_raises_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such file or folder"):
        validate(tmp_path / "missing.jsonl", "chat")


def test_unknown_format_names_the_closest() -> None:
    path = FIXTURES / "chat_ok.jsonl"
    with pytest.raises(UserError, match="did you mean 'preference'"):
        validate(path, "preferences")
    with pytest.raises(UserError, match="did you mean 'chat'"):
        validate(path, "sft")


def _refuse_to_read(locked: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulated, because chmod 0 does not stop root (which CI containers often are).
    read_bytes = Path.read_bytes

    def refusing(self: Path) -> bytes:
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", refusing)


def test_unreadable_file_raises_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "locked.jsonl"
    path.write_text(json.dumps({"text": "x"}) + "\n")
    _refuse_to_read(path, monkeypatch)
    with pytest.raises(UserError, match="cannot read it \\(Permission denied\\)"):
        validate(path, "text")


def test_unreadable_file_inside_a_folder_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.txt").write_text("readable\n")
    (tmp_path / "b.txt").write_text("locked\n")
    _refuse_to_read(tmp_path / "b.txt", monkeypatch)
    result = validate(tmp_path, "text")
    assert result.errors == [f"{tmp_path}/b.txt: cannot read the file (Permission denied); check its permissions"]
    assert result.rows == [{"text": "readable\n"}]


def test_unreadable_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.txt").write_text("readable\n")
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "b.txt").write_text("locked\n")
    scandir = os.scandir
    locked = {str(tmp_path / "locked")}

    def refusing(path: str) -> object:
        if str(path) in locked:
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)  # os.walk lists folders through it
    result = validate(tmp_path, "text")
    assert result.errors == [f"{tmp_path}/locked: cannot read the folder (Permission denied); check its permissions"]
    assert result.rows == [{"text": "readable\n"}]
    locked.add(str(tmp_path))
    with pytest.raises(UserError, match="cannot read the folder"):
        validate(tmp_path, "text")


# ---------------------------------------------------------------------------- hashing and size


def test_canonical_jsonl_is_deterministic_and_ignores_key_order() -> None:
    a = [{"prompt": "é", "answer": {"x": 1, "y": [1, 2]}}, {"text": "two"}]
    b = [{"answer": {"y": [1, 2], "x": 1}, "prompt": "é"}, {"text": "two"}]
    assert canonical_jsonl(a) == canonical_jsonl(b)
    assert canonical_jsonl(a) == '{"answer":{"x":1,"y":[1,2]},"prompt":"é"}\n{"text":"two"}\n'.encode()
    assert canonical_jsonl([]) == b""
    assert canonical_jsonl(a) != canonical_jsonl(list(reversed(a)))  # row order is content


def test_content_hash_ignores_whitespace_and_key_order_of_the_file(tmp_path: Path) -> None:
    compact = tmp_path / "compact.jsonl"
    spaced = tmp_path / "spaced.jsonl"
    compact.write_text('{"prompt":"q","chosen":"a","rejected":"b"}\n')
    spaced.write_text('\ufeff{ "rejected" : "b",  "prompt": "q", "chosen": "a" }\r\n\n')
    hashes = {hashlib.sha256(canonical_jsonl(validate(p, "preference").rows)).hexdigest() for p in (compact, spaced)}
    assert len(hashes) == 1


def test_approx_tokens_counts_only_tokenized_text() -> None:
    assert approx_tokens([{"text": "x" * 40}], "text") == 10
    assert approx_tokens([{"prompt": "x" * 8, "answer": "y" * 400}], "prompt") == 2
    chat = [{"messages": [{"role": "user", "content": "x" * 11}, {"role": "assistant", "content": "y" * 2}]}]
    assert approx_tokens(chat, "chat") == 7  # 26 characters with the role names, / 4, rounded up
    assert approx_tokens([], "preference") == 0


def test_formats_and_ok() -> None:
    assert FORMATS == ("text", "chat", "preference", "prompt")
    assert Validated(format="text", rows=[], errors=[], duplicates=0, sources=[]).ok()
    assert not Validated(format="text", rows=[], errors=["f: x"], duplicates=0, sources=[]).ok()


def test_roles_and_layouts_from_other_tools_get_a_hint(tmp_path: Path) -> None:
    developer = {"messages": [{"role": "developer", "content": "Be brief."}, USER, ASSISTANT]}
    sharegpt = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}
    result = _validate_lines(tmp_path, [developer, sharegpt], "chat")
    assert len(result.errors) == 2
    assert "'developer'" in result.errors[0] and "did you mean 'system'" in result.errors[0]
    assert result.errors[1].startswith(f"{result.sources[0]}:2: this looks like ShareGPT")
