"""The eval metrics, looked up the way suites and GRPO look them up: through the shared registry."""

from __future__ import annotations

import json

import pytest

from weightsmith.errors import UserError
from weightsmith.rewards import get_reward, reward_names

ASSISTANT = [{"role": "assistant", "content": '{"total": 42}'}]  # how TRL passes a chat completion


def test_metrics_are_registered_lazily_with_the_builtin_rewards():
    names = set(reward_names())
    assert {"regex_match", "json_valid", "json_schema_valid", "length_chars", "length_tokens_approx"} <= names
    assert "exact_match" in names and "llm_judge" in names


def test_regex_match_searches_each_row_pattern():
    regex_match = get_reward("regex_match")
    completions = ["Order #A-1234 shipped", "no order here", "ID: 77", ASSISTANT]
    patterns = [r"#[A-Z]-\d{4}", r"#[A-Z]-\d{4}", r"^\d+$", r'"total":\s*\d+']
    assert regex_match(completions, pattern=patterns) == [1.0, 0.0, 0.0, 1.0]
    assert regex_match(["42"], pattern=[r"^\d+$"], answer=["ignored"]) == [1.0]


def test_regex_match_bad_pattern_is_a_user_error():
    with pytest.raises(UserError, match=r"pattern '\(unclosed' is not a valid regular expression"):
        get_reward("regex_match")(["x"], pattern=["(unclosed"])


def test_json_valid_is_strict():
    json_valid = get_reward("json_valid")
    completions = [
        '{"a": [1, 2, {"b": null}]}',
        "  [1, 2]\n",
        "42",
        '{"a": 1,}',  # trailing comma
        'Here you go: {"a": 1}',  # prose around it
        '```json\n{"a": 1}\n```',  # a code fence
        '{"a": NaN}',  # Python accepts this; JSON does not
        "",
        ASSISTANT,
    ]
    assert json_valid(completions) == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]


SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}},
    "required": ["name", "qty"],
    "additionalProperties": False,
}


def test_json_schema_valid_checks_each_row_schema_given_as_dict_or_text():
    json_schema_valid = get_reward("json_schema_valid")
    completions = [
        '{"name": "bolt", "qty": 3}',
        '{"name": "bolt", "qty": 0}',  # below minimum
        '{"name": "bolt"}',  # missing key
        '{"name": "bolt", "qty": 3, "x": 1}',  # extra key
        "not json",
        '{"total": 42}',
    ]
    schemas = [SCHEMA] * 5 + [json.dumps({"type": "object", "required": ["total"]})]
    assert json_schema_valid(completions, schema=schemas) == [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    assert json_schema_valid([ASSISTANT], schema=['{"required": ["total"]}']) == [1.0]


def test_json_schema_valid_broken_schema_is_a_user_error():
    json_schema_valid = get_reward("json_schema_valid")
    with pytest.raises(UserError, match="not a valid JSON Schema"):
        json_schema_valid(["{}"], schema=[{"type": "no-such-type"}])
    with pytest.raises(UserError, match="is not valid JSON"):
        json_schema_valid(["{}"], schema=["{broken"])


def test_lengths():
    completions = ["", "héllo", "Hello, world! It's 3pm.", ASSISTANT]
    assert get_reward("length_chars")(completions) == [0.0, 5.0, 23.0, 13.0]
    # words and punctuation marks: Hello , world ! It ' s 3pm .
    assert get_reward("length_tokens_approx")(completions) == [0.0, 1.0, 9.0, 7.0]
