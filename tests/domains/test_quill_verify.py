"""The verifier judges programs by what they compute, and the rewards are registered."""

import pytest

from weightsmith.domains.quill import verify
from weightsmith.domains.quill.verify import extract_program, preference_pairs
from weightsmith.errors import UserError
from weightsmith.rewards import get_reward

REF = "signal mom = rank(delta(close, 5))"


def exec_score(candidate, reference=REF):
    return get_reward("quill_exec")([candidate], [reference])[0]


@pytest.mark.parametrize("reference, candidate", [
    (REF, "signal mom = rank(close - delay(close, 5))"),
    (REF, "signal other_name = rank(delta(close,5))"),
    ("signal a = ts_mean(returns, 5) * 2", "signal a = ts_mean(returns, 5) + ts_mean(returns, 5)"),
    ("signal a = returns * 2", "signal b = returns + returns"),
    ("signal a = pct_change(close, 1)", "signal a = returns"),
    ("signal a = group_demean(returns, sector)", "signal a = returns - group_mean(returns, sector)"),
    ("filter f = close > open", "filter g = open < close"),
    ("signal s = rank(returns)\nportfolio long_short(s)", "portfolio long_short(returns, top=0.2)"),
    ("signal s = rank(returns)\nportfolio long_short(s)", "signal t = returns\nportfolio long_short(t)"),
])
def test_equivalent_rewrites_are_correct(reference, candidate):
    assert exec_score(candidate, reference) == 1.0


@pytest.mark.parametrize("reference, candidate", [
    (REF, "signal mom = rank(delta(close, 6))"),  # the near miss: one more day
    (REF, "signal mom = delta(close, 5)"),
    (REF, "signal mom = rank(delta(open, 5))"),
    ("filter f = ts_mean(volume, 20) > 1e6", "filter f = ts_mean(volume, 20) > 2e6"),
    ("signal a = max(returns, 0)", "signal a = if_else(returns > 0, returns, 0)"),  # NaNs differ
    ("signal s = rank(returns)\nportfolio long_short(s)", "signal s = rank(returns)\nportfolio long_short(s, top=0.3)"),
    (REF, "filter mom = rank(delta(close, 5)) > 0.5"),  # a condition is not a number
])
def test_near_misses_get_partial_credit_only(reference, candidate):
    assert exec_score(candidate, reference) == pytest.approx(verify.PARTIAL_CREDIT)


@pytest.mark.parametrize("candidate", ["", "rank(delta(close, 5))", "signal mom = rank(delta(close 5))",
                                       "The answer is a momentum signal.", "signal x = " + "close + " * 600 + "1"])
def test_invalid_programs_score_zero(candidate):
    assert exec_score(candidate) == 0.0


@pytest.mark.parametrize("op", ["delay", "ts_mean", "ts_rank", "decay_linear", "ts_argmax"])
def test_absurd_windows_are_cheap_and_wrong(op):
    assert exec_score(f"signal mom = rank({op}(close, 1000000000000))") == pytest.approx(verify.PARTIAL_CREDIT)


def test_completion_forms():
    fenced = f"```quill\n{REF}\n```"
    messages = [{"role": "assistant", "content": f"Here it is:\n```\n{REF}\n```\nDone."}]
    scores = get_reward("quill_exec")([REF, fenced, messages], [REF] * 3)
    assert scores == [1.0, 1.0, 1.0]
    assert extract_program(fenced) == REF


def test_kpi_rewards():
    completions = [REF, "signal mom = rank(delta(close, 6))", "nonsense ("]
    assert get_reward("quill_exec_match")(completions, [REF] * 3) == [1.0, 0.0, 0.0]
    assert get_reward("quill_parses")(completions) == [1.0, 1.0, 0.0]
    assert get_reward("quill_exec") is verify.quill_exec


def test_extra_columns_are_ignored():
    assert get_reward("quill_exec")([REF], reference=[REF], task_id=["t1"], prompt=[[]]) == [1.0]


def test_a_reference_that_does_not_parse_is_a_user_error():
    with pytest.raises(UserError, match="reference program does not parse"):
        exec_score(REF, "signal broken = rank(")


def test_scores_are_cached_and_stable():
    first = exec_score("signal z = rank(close - delay(close, 5))")
    assert exec_score("signal z = rank(close - delay(close, 5))") == first == 1.0


def test_preference_pairs_rank_correct_over_parsing_over_invalid():
    samples = {"p1": ["garbage", "signal m = rank(delta(close, 6))", REF, REF], "p2": ["x", "y"]}
    pairs = preference_pairs(samples, {"p1": REF, "p2": REF})
    # p2 has nothing better than invalid: no pair. p1: duplicates collapse; hard negative first.
    assert pairs == [
        {"prompt": "p1", "chosen": REF, "rejected": "signal m = rank(delta(close, 6))"},
        {"prompt": "p1", "chosen": REF, "rejected": "garbage"},
    ]


def test_preference_pairs_with_chat_messages_and_reference_fallback():
    prompt = [{"role": "user", "content": "rank the 5-day change in close"}]
    wrong = [{"role": "assistant", "content": "signal m = rank(delta(close, 6))"}]
    pairs = preference_pairs([(prompt, [wrong])], [REF], reference_fallback=True)
    assert pairs == [{"prompt": prompt, "chosen": [{"role": "assistant", "content": REF}], "rejected": wrong}]
    assert preference_pairs([{"prompt": "p", "completions": [wrong]}], [REF]) == []


def test_preference_pairs_reports_missing_references():
    with pytest.raises(UserError, match="2 prompts but 1 references"):
        preference_pairs([("a", [REF]), ("b", [REF])], [REF])


MULTI = "signal mom = rank(ts_min(high, 10))\nfilter big = close > 140\nportfolio long_short(mom, where=big)"


def steps_score(candidate, reference=MULTI):
    return get_reward("quill_exec_steps")([candidate], [reference])[0]


def test_step_reward_credits_each_statement_computed_right_and_nothing_for_parsing():
    assert steps_score(MULTI.replace("mom", "m").replace("big", "b")) == 1.0  # names do not matter
    assert steps_score(MULTI.replace("where=big", "where=big, top=0.3")) == pytest.approx(0.5 * 2 / 3)
    # A wrong filter makes the portfolio over it wrong too: only the signal counts.
    assert steps_score(MULTI.replace("140", "150")) == pytest.approx(0.5 * 1 / 3)
    assert steps_score("signal mom = rank(close)\nfilter big = close > 140") == pytest.approx(0.5 * 1 / 3)
    # One-statement references: right or nothing, however much of the candidate is right.
    assert steps_score("signal mom = rank(delta(close, 6))", REF) == 0.0
    assert steps_score(REF + "\nportfolio", REF) == 0.0
    assert steps_score("nonsense (") == steps_score("") == 0.0
    # A stray character is a wrong program, not a crashed training step.
    assert steps_score("signal mom = rank(ts_min(highα, 10))") == exec_score("signal a = closeα") == 0.0


def test_step_reward_leaves_no_shortcut():
    undefined_name = MULTI.replace("long_short(mom", "long_short(edge")
    dropped_line = "\n".join(MULTI.splitlines()[:2])
    assert exec_score(dropped_line, MULTI) > exec_score(undefined_name, MULTI)  # quill_exec's shortcut
    assert steps_score(dropped_line) <= steps_score(undefined_name) == pytest.approx(0.5 * 2 / 3)
    # Extra statements earn nothing, so guessing several versions of a line does not pay ...
    lines = MULTI.replace("where=big", "where=big, top=0.3").splitlines()
    assert steps_score("\n".join(lines[:2] + ["signal z = close"] + lines[2:])) == 0.0
    assert steps_score("signal a = rank(close)\n" + MULTI) == 1.0  # ... unless the answer is right
    # What follows a right program and does not parse makes it wrong: the lines before it still count.
    assert steps_score(MULTI + "\nsignal z = close") == 0.5
