"""No built-in metric can be fooled by an empty gold, an empty completion, or text normalization leaves nothing of.

The failing input of issue 10: gold answers "+" and "-", a model that answers "....". Normalization
strips every non-word character, so "" == "" and "" in x made normalized_match and contains_answer
score it 1.0.
"""

from __future__ import annotations

import pytest

from weightsmith.errors import UserError
from weightsmith.rewards import get_reward

ASSISTANT_DOTS = [{"role": "assistant", "content": "...."}]  # how TRL passes a chat completion


@pytest.mark.parametrize("metric", ["normalized_match", "contains_answer", "token_f1", "exact_match", "chrf"])
def test_punctuation_gold_is_not_matched_by_punctuation(metric):
    score = get_reward(metric)
    assert score(["....", "....", ASSISTANT_DOTS], answer=["+", "-", "+"]) == [0.0, 0.0, 0.0]
    # The right sign still scores: the gold is compared as written instead of normalized away.
    assert score(["+", " - ", "-"], answer=["+", "-", "+"]) == pytest.approx([1.0, 1.0, 0.0])


@pytest.mark.parametrize("metric", ["normalized_match", "contains_answer", "token_f1", "exact_match", "chrf"])
@pytest.mark.parametrize("gold", ["", "   ", "\n"])
def test_an_empty_gold_matches_nothing(metric, gold):
    assert get_reward(metric)(["", "   ", "anything", "...."], answer=[gold] * 4) == [0.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("metric", ["normalized_match", "contains_answer", "token_f1", "exact_match", "chrf"])
def test_an_empty_completion_scores_zero(metric):
    assert get_reward(metric)(["", "  \n ", [{"role": "assistant", "content": ""}]], answer=["north"] * 3) == [0.0] * 3


def test_contains_answer_wants_whole_words():
    contains = get_reward("contains_answer")
    completions = ["42", "it is 4.", "I know", "no, never", "+-+-", "the sign is +", "東京の倉庫は北", "Склад: север"]
    answers = ["4", "4", "no", "no", "+", "+", "倉庫", "север"]
    # "4" is not in "42" nor "no" in "know"; where words have no spaces between them (Japanese), any occurrence counts.
    assert contains(completions, answer=answers) == [0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0]


def test_chrf_of_an_exact_short_answer_is_one():
    # A one- or two-character answer has no trigrams; an exact answer still scores 1.0, not 1/3.
    assert get_reward("chrf")(["+", "ok", "o"], answer=["+", "ok", "ok"]) == pytest.approx([1.0, 1.0, 1 / 3])


def test_regex_match_refuses_patterns_that_match_an_empty_text():
    regex_match = get_reward("regex_match")
    for pattern in ["", r"\d*", "(yes)?", "^$"]:
        with pytest.raises(UserError, match="matches an empty text, so it would match every completion"):
            regex_match(["anything"], pattern=[pattern])
    assert regex_match(["", "  ", "7"], pattern=[r"\d+"] * 3) == [0.0, 0.0, 1.0]


def test_json_metrics_score_empty_completions_zero():
    assert get_reward("json_valid")(["", "   ", "\n"]) == [0.0, 0.0, 0.0]
    assert get_reward("json_schema_valid")(["", "  "], schema=[{"type": "object"}] * 2) == [0.0, 0.0]


def test_length_metrics_of_an_empty_completion_are_zero():
    assert get_reward("length_chars")([""]) == [0.0]
    assert get_reward("length_tokens_approx")(["", "   "]) == [0.0, 0.0]


@pytest.mark.parametrize("metric", ["quill_exec", "quill_exec_steps", "quill_exec_match"])
def test_quill_rewards_score_empty_completions_zero_and_refuse_an_empty_reference(metric):
    reference = "signal mom = rank(delta(close, 5))"
    assert get_reward(metric)(["", "   ", "....", reference], reference=[reference] * 4) == [0.0, 0.0, 0.0, 1.0]
    with pytest.raises(UserError, match="empty program"):
        get_reward(metric)(["x"], reference=[""])
