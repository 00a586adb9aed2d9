"""The generic rewards/metrics and the registry that serves both RL and evals."""

from __future__ import annotations

import pytest

from weightsmith.errors import UserError
from weightsmith.rewards import completion_text, get_reward, reward_names


def test_exact_and_normalized_match():
    em, nm = get_reward("exact_match"), get_reward("normalized_match")
    assert em(["NOR-01", " NOR-01 ", "nor-01"], answer=["NOR-01"] * 3) == [1.0, 1.0, 0.0]
    assert nm(["nor 01!", "NOR-02"], answer=["NOR-01"] * 2) == [1.0, 0.0]


def test_token_f1_and_chrf_are_graded():
    f1 = get_reward("token_f1")
    assert f1(["the depot manager", "depot", "nothing"], answer=["the depot manager"] * 3) == pytest.approx([1.0, 0.5, 0.0])
    chrf = get_reward("chrf")
    exact, close, far = chrf(["NOR-01", "NOR-02", "zzz"], answer=["NOR-01"] * 3)
    assert exact == pytest.approx(1.0) and 0.0 < close < 1.0 and far == 0.0


def test_conversational_completions_are_read():
    msgs = [[{"role": "assistant", "content": "NOR-01"}]]
    assert completion_text(msgs[0]) == "NOR-01"
    assert get_reward("exact_match")(msgs, answer=["NOR-01"]) == [1.0]


def test_unknown_reward_suggests_and_user_functions_load():
    with pytest.raises(UserError, match="did you mean 'exact_match'"):
        get_reward("exact_mach")
    assert "chrf" in reward_names()
    fn = get_reward("weightsmith.rewards.builtin:token_f1")
    assert fn(["a b"], answer=["a b"]) == [1.0]
    with pytest.raises(UserError, match="has no function"):
        get_reward("weightsmith.rewards.builtin:nope")
    with pytest.raises(UserError, match="cannot import"):
        get_reward("no_such_module_xyz:f")
