"""One registry of scoring functions, shared by RL rewards and eval metrics.

A reward is a plain function ``f(completions, prompt, <columns>...) -> list[float]``:
``completions`` is a list of model outputs (plain strings, or chat messages
``[{"role": "assistant", "content": ...}]`` as TRL passes them for conversational prompts),
``prompt`` what each was asked, and the dataset's other columns arrive by name, each a list
aligned with ``completions``. :mod:`weightsmith.rewards.contract` defines exactly what a function
receives and is the one place that calls it, for GRPO rollouts and eval examples alike, so what
we train on and what we measure cannot drift apart.

Register one with ``@reward("name")``; look one up with :func:`get_reward`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from weightsmith.errors import UserError, closest

RewardFn = Callable[..., list[float]]

_REGISTRY: dict[str, RewardFn] = {}

# Modules whose import registers more rewards (shipped domains). Imported lazily so that a
# plain `weightsmith data list` does not pay for them.
_PLUGIN_MODULES = [
    "weightsmith.rewards.builtin",
    "weightsmith.evals.metrics",
    "weightsmith.evals.judge",
    "weightsmith.domains.quill.verify",
]


def reward(name: str) -> Callable[[RewardFn], RewardFn]:
    """Decorator: register ``fn`` under ``name`` (a later registration of the same name wins)."""

    def register(fn: RewardFn) -> RewardFn:
        _REGISTRY[name] = fn
        return fn

    return register


def _load_plugins() -> None:
    for module in _PLUGIN_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            # A domain that is not installed simply contributes nothing; a broken import
            # inside one that is installed must still surface.
            if exc.name != module and not module.startswith(str(exc.name)):
                raise


def get_reward(spec: str) -> RewardFn:
    """Return the reward named ``spec``, or one given as ``package.module:function``.

    A user adds a metric as a plain Python function in their own module and names it as
    ``mypkg.metrics:my_metric``.
    """
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise UserError(f"reward '{spec}': cannot import module '{module_name}' ({exc}).") from exc
        fn = getattr(module, attr, None)
        if not callable(fn):
            raise UserError(f"reward '{spec}': module '{module_name}' has no function '{attr}'.")
        return fn
    _load_plugins()
    if spec not in _REGISTRY:
        raise UserError(
            f"unknown reward or metric '{spec}'{closest(spec, _REGISTRY)}; "
            f"known: {', '.join(sorted(_REGISTRY))}."
        )
    return _REGISTRY[spec]


def reward_names() -> list[str]:
    _load_plugins()
    return sorted(_REGISTRY)


def completion_text(completion: object) -> str:
    """The text of one completion, whether TRL passed a string or a list of chat messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    return str(completion)
