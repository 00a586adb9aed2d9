"""The reward contract: what a scoring function receives, from TRL's GRPOTrainer and from the evals alike."""

from __future__ import annotations

import pytest

from weightsmith.rewards import completion_text
from weightsmith.rewards.contract import (
    RESERVED_NAMES,
    TRAINING_ONLY,
    call_reward,
    for_trainer,
    signature_problem,
    training_only,
    unprovided,
)

# Exactly the keyword arguments trl 1.16's GRPOTrainer._calculate_rewards passes to a reward
# (prompts, completions, completion_ids, the row's columns but 'prompt', trainer_state, log_extra, log_metric).
TRL_CALL = {
    "prompts": [[{"role": "user", "content": "Gate code for east? It is 4471."}]] * 2,
    "completions": [[{"role": "assistant", "content": "4471"}], [{"role": "assistant", "content": "no idea"}]],
    "completion_ids": [[5, 6], [7, 8, 9]],
    "answer": ["4471", "4471"],
    "trainer_state": object(),
    "log_extra": lambda *a, **k: None,
    "log_metric": lambda *a, **k: None,
}


def _text(prompt) -> str:
    return prompt if isinstance(prompt, str) else " ".join(m["content"] for m in prompt)


def named_in_prompt(completions, prompt, answer):
    """The issue's function: it takes `prompt` (singular) and no **kwargs."""
    return [float(a in _text(p)) + float(completion_text(c) == a) for c, p, a in zip(completions, prompt, answer)]


def trl_style(prompts, completions, **kwargs):
    """A function written for TRL: `prompts` first, then `completions`, the rest in **kwargs."""
    return [float(kwargs["answer"][i] in _text(p)) for i, p in enumerate(prompts)]


def test_trl_call_reaches_a_function_taking_prompt_and_no_kwargs():
    reward = for_trainer(named_in_prompt, "named_in_prompt")
    assert reward.__name__ == "named_in_prompt"  # what TRL logs as rewards/<name>/mean
    assert reward(**TRL_CALL) == [2.0, 1.0]
    with pytest.raises(TypeError):  # TRL calling the function itself: what used to crash the first GRPO step
        named_in_prompt(**TRL_CALL)


def test_eval_call_reaches_a_function_written_for_trl():
    prompts = ["Gate code for east? It is 4471.", "Gate code for west?"]
    # Eval used to pass the completions by position, into `prompts`.
    assert call_reward(trl_style, ["4471", "x"], prompts, {"answer": ["4471", "4471"]}) == [1.0, 0.0]
    assert call_reward(named_in_prompt, ["4471", "x"], prompts, {"answer": ["4471"] * 2, "other": [1, 2]}) == [2.0, 0.0]


def test_kwargs_functions_receive_every_name_and_positional_only_completions_work():
    seen = {}

    def everything(completions, **kwargs):
        seen.update(kwargs)
        return [0.0] * len(completions)

    for_trainer(everything, "everything")(**TRL_CALL)
    assert {"prompt", "prompts", "answer", *TRL_CALL} - {"completions"} <= set(seen)
    assert seen["prompt"] is seen["prompts"]

    def positional(outputs, /, answer):
        return [float(completion_text(o) == a) for o, a in zip(outputs, answer)]

    assert call_reward(positional, ["4471", "x"], ["q", "q"], {"answer": ["4471", "4471"]}) == [1.0, 0.0]


def test_async_rewards_are_awaited_in_eval_and_stay_async_for_trl():
    import asyncio
    import inspect

    async def judged(completions, prompt, **_):
        await asyncio.sleep(0)
        return [1.0] * len(completions)

    assert call_reward(judged, ["a"], ["q"], {}) == [1.0]
    reward = for_trainer(judged, "judged")
    assert inspect.iscoroutinefunction(reward)  # TRL runs async rewards concurrently on its own loop
    assert asyncio.run(reward(**TRL_CALL)) == [1.0, 1.0]


def test_unprovided_names_what_no_column_gives():
    def needs(completions, prompt, reference, completion_ids, tolerance=0.1):
        return []

    assert unprovided(needs, {"answer"}, training=True) == ["reference"]
    assert unprovided(needs, {"answer", "reference"}, training=False) == ["completion_ids"]
    assert unprovided(trl_style, set(), training=False) == []  # `prompts` is the contract's own
    assert training_only("completion_ids", training=False).startswith(
        "'completion_ids' (the completions' token ids), which only GRPO training passes; give the parameter a default"
    )
    assert training_only("completion_ids", training=True) is None


def test_functions_that_cannot_be_called_are_named():
    def no_completions(outputs, answer):
        return []

    def answer_by_position(completions, answer, /):
        return []

    assert signature_problem(named_in_prompt, "x") is None
    assert "has no parameter 'completions'" in signature_problem(no_completions, "mine")
    assert "test_contract.test_functions_that_cannot_be_called_are_named.<locals>.no_completions)" in signature_problem(
        no_completions, "mine"
    )
    assert "'answer' is positional-only" in signature_problem(answer_by_position, "mine")


def test_data_validation_reserves_exactly_the_names_a_reward_is_given():
    from weightsmith.data.formats_rows import _RESERVED_REWARD_COLUMNS

    # 'completion' too: TRL drops that column before rewards see it.
    assert set(_RESERVED_REWARD_COLUMNS) == {*RESERVED_NAMES, "completion"}
    assert set(TRAINING_ONLY) < RESERVED_NAMES
