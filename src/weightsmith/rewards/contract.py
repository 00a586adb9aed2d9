"""The one contract between a scoring function and everything that calls it.

GRPO training (TRL's ``GRPOTrainer``), eval KPIs and preference-pair mining all call rewards
and metrics through :func:`call_reward` (TRL through the :func:`for_trainer` adapter), and check
a function's signature with :func:`unprovided` before any compute, so a function that works in
one place works in the others.

What a reward receives, every argument by keyword, each list aligned with ``completions``:

``completions``
    the model's outputs: plain strings, or, for conversational prompts in GRPO, the assistant
    turn as ``[{"role": "assistant", "content": ...}]`` (read either with
    :func:`weightsmith.rewards.completion_text`).
``prompt``
    what the model was asked: the row's prompt (a string or a message list); in an eval, the
    prompt as the KPI rendered it (template and system message applied).
``prompts``
    the same list under TRL's plural name, so functions written for TRL work unchanged.
*every other column of the row*
    by its column name (``answer``, ``reference``, ``tools``, ...); in an eval also the
    suite's constant ``columns:`` (as lists) and its ``options:`` (as single values).
``completion_ids``, ``trainer_state``, ``log_extra``, ``log_metric``, ``environments``
    passed by GRPO training only (see :data:`TRAINING_ONLY`); a function that must also serve
    as a metric gives them a default.

A function receives only the names it declares, unless it takes ``**kwargs`` (then it receives
all of them), so ``f(completions, prompt, answer)`` needs no ``**_``. ``prompt`` is the
canonical name because it is the prompt row's own column name: the prompt reaches a reward
under the same name as every other column, the name a person sees in their data. A parameter
without a default that no argument provides is refused before any compute, naming the function
and the parameter.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

COMPLETIONS = "completions"
PROMPT = "prompt"
PROMPT_ALIAS = "prompts"

# What GRPOTrainer passes besides the prompts, the completions and the row's columns
# (trl 1.16, GRPOTrainer._calculate_rewards); eval and pair mining have none of these.
TRAINING_ONLY = {
    "completion_ids": "the completions' token ids",
    "trainer_state": "the trainer's state",
    "log_extra": "a hook that logs extra columns",
    "log_metric": "a hook that logs a metric",
    "environments": "the rollouts' environments",
}

# Names a dataset column cannot take: the caller passes its own value under them.
RESERVED_NAMES = frozenset({COMPLETIONS, PROMPT_ALIAS, *TRAINING_ONLY})


@dataclass(frozen=True)
class RewardSignature:
    """What a scoring function accepts.

    Attributes:
        names: the parameters that can be passed by keyword.
        required: those without a default, in signature order.
        any_keyword: it takes ``**kwargs`` (and then receives every argument).
        completions_by_position: its first parameter is positional-only (it gets the completions).
        problem: why it cannot be called under the contract at all, or None.
    """

    names: frozenset[str]
    required: tuple[str, ...]
    any_keyword: bool
    completions_by_position: bool = False
    problem: str | None = None


@functools.lru_cache(maxsize=256)
def _signature(fn: Callable) -> RewardSignature:
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # a builtin or extension callable: nothing to check, pass everything
        return RewardSignature(frozenset(), (), any_keyword=True)
    by_position = bool(parameters) and parameters[0].kind is inspect.Parameter.POSITIONAL_ONLY
    names, required, problem = set(), [], None
    for index, parameter in enumerate(parameters):
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if parameter.kind is parameter.POSITIONAL_ONLY and index > 0:
            if parameter.default is parameter.empty:
                problem = (
                    f"its parameter '{parameter.name}' is positional-only, and rewards get their arguments by name; "
                    "remove the '/' from its signature"
                )
            continue
        if index == 0 and by_position:
            continue  # the completions, passed first
        names.add(parameter.name)
        if parameter.default is parameter.empty:
            required.append(parameter.name)
    any_keyword = any(p.kind is p.VAR_KEYWORD for p in parameters)
    if not by_position and COMPLETIONS not in names and not any_keyword:
        problem = f"it has no parameter '{COMPLETIONS}' (nor **kwargs); name the one that takes the outputs so"
    return RewardSignature(frozenset(names), tuple(required), any_keyword, by_position, problem)


def reward_signature(fn: Callable) -> RewardSignature:
    """What ``fn`` accepts (cached per function)."""
    try:
        return _signature(fn)
    except TypeError:  # an unhashable callable object
        return _signature.__wrapped__(fn)


def describe(fn: Callable) -> str:
    """``module.function`` for messages (a callable object: its class)."""
    target = fn.func if isinstance(fn, functools.partial) else fn
    name = getattr(target, "__qualname__", None) or type(target).__qualname__
    module = getattr(target, "__module__", None) or type(target).__module__
    return f"{module}.{name}"


def unprovided(fn: Callable, columns: Collection[str], *, training: bool) -> list[str]:
    """The parameters ``fn`` requires that no argument provides, in signature order.

    Args:
        fn: the reward or metric.
        columns: the names the caller provides besides the contract's own (a row's columns,
            an eval's ``columns:`` and ``options:``).
        training: True for GRPO, which also provides :data:`TRAINING_ONLY`.
    """
    provided = {COMPLETIONS, PROMPT, PROMPT_ALIAS, *columns, *(TRAINING_ONLY if training else ())}
    return [name for name in reward_signature(fn).required if name not in provided]


def training_only(name: str, *, training: bool) -> str | None:
    """For a parameter only GRPO training provides, called elsewhere: what it is and what to do; else None."""
    if name in TRAINING_ONLY and not training:
        return (
            f"'{name}' ({TRAINING_ONLY[name]}), which only GRPO training passes; give the parameter a default "
            f"(e.g. {name}=None) to use the function here too"
        )
    return None


def signature_problem(fn: Callable, label: str) -> str | None:
    """A sentence saying why ``fn`` cannot be called as a reward at all, or None."""
    problem = reward_signature(fn).problem
    return f"reward/metric '{label}' ({describe(fn)}) cannot be called: {problem}." if problem else None


def _arguments(fn: Callable, completions: list, prompts: list, columns: Mapping[str, Any]) -> tuple[tuple, dict]:
    signature = reward_signature(fn)
    named = {**columns, PROMPT: prompts, PROMPT_ALIAS: prompts}
    if signature.completions_by_position:
        args: tuple = (completions,)
    else:
        args, named[COMPLETIONS] = (), completions
    if not signature.any_keyword:
        named = {key: value for key, value in named.items() if key in signature.names}
    return args, named


def call_reward(fn: Callable, completions: list, prompts: list, columns: Mapping[str, Any]) -> list:
    """Score ``completions`` with ``fn`` under the contract; returns what ``fn`` returns.

    Args:
        completions: one entry per completion.
        prompts: the prompt of each completion (the same length).
        columns: every other argument by name: the row's columns (lists aligned with the
            completions) and settings (single values). The contract's own names win over these.

    An ``async`` function is run to completion here (outside TRL, nothing else awaits it).
    """
    args, named = _arguments(fn, completions, prompts, columns)
    result = fn(*args, **named)
    if inspect.isawaitable(result):
        result = asyncio.run(_awaited(result))
    return result


async def _awaited(awaitable):
    return await awaitable


def for_trainer(fn: Callable, label: str) -> Callable:
    """``fn`` in TRL GRPOTrainer's calling convention, named ``label`` in TRL's reward logs.

    TRL calls ``reward(prompts=..., completions=..., completion_ids=..., <row columns>...,
    trainer_state=..., log_extra=..., log_metric=...)``; this passes each on under the contract.
    An ``async`` function stays async, so TRL runs it concurrently with the others as it would.
    """

    def split(kwargs: dict) -> tuple[list, list, dict]:
        return kwargs.pop(COMPLETIONS), kwargs.pop(PROMPT_ALIAS), kwargs

    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None)):

        async def reward(**kwargs):
            completions, prompts, columns = split(kwargs)
            args, named = _arguments(fn, completions, prompts, columns)
            return await fn(*args, **named)

    else:

        def reward(**kwargs):
            completions, prompts, columns = split(kwargs)
            return call_reward(fn, completions, prompts, columns)

    reward.__name__ = reward.__qualname__ = label
    return reward
