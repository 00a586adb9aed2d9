"""Training stages: one recipe module per stage, run by ``python -m weightsmith.training.runner SPEC.json``.

Each recipe module defines ``Config`` (a pydantic model: the stage's hyperparameters, every field
with a working default and a description) and ``run(cfg, inputs, ctx) -> dict``. This package
only names them: importing it, and validating a stage config with :func:`stage_config_class` or
:func:`validate_stage_config`, imports no torch, transformers or trl, so a pipeline YAML is
checked before any compute.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from pydantic import BaseModel, ValidationError

from weightsmith.errors import UserError, closest

# In pipeline order.
STAGE_KINDS: tuple[str, ...] = ("tokenizer", "pretrain", "cpt", "sft", "dpo", "grpo")

# Users who know transformers/TRL type their names; point them at ours.
_LIBRARY_NAMES = {
    "learning_rate": "lr",
    "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum",
    "lr_scheduler_type": "lr_schedule",
    "gradient_checkpointing": "activation_checkpointing",
    "max_seq_length": "max_length",
    "block_size": "seq_len",
    "peft_config": "lora",
    "reward_funcs": "reward",
}


def recipe_module(kind: str) -> ModuleType:
    """The recipe module for stage ``kind`` (imported on first use)."""
    if kind not in STAGE_KINDS:
        raise UserError(f"unknown stage kind '{kind}'{closest(kind, STAGE_KINDS)}; known: {', '.join(STAGE_KINDS)}.")
    return importlib.import_module(f"weightsmith.training.{kind}")


def stage_config_class(kind: str) -> type[BaseModel]:
    """The pydantic model of stage ``kind``'s hyperparameters."""
    return recipe_module(kind).Config


def validate_stage_config(kind: str, config: dict[str, Any] | None) -> BaseModel:
    """Validate a stage's hyperparameters, reporting the first problem as one sentence naming the key."""
    config_class = stage_config_class(kind)
    try:
        return config_class.model_validate(config or {})
    except ValidationError as exc:
        raise UserError(describe_validation_error(kind, config_class, exc)) from exc


def describe_validation_error(kind: str, config_class: type[BaseModel], exc: ValidationError) -> str:
    """One sentence for the first error of a stage-config ``ValidationError``."""
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"]) or "(config)"
    if error["type"] == "extra_forbidden":
        known = list(config_class.model_fields)
        name = str(error["loc"][-1])
        ours = _LIBRARY_NAMES.get(name)
        hint = f" (did you mean '{ours}'?)" if ours in known else closest(name, known)
        return f"{kind} config: '{key}' is not a setting of the {kind} stage{hint}; known settings: {', '.join(known)}."
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{kind} config: '{key}': {message} (got {error.get('input')!r})."


__all__ = ["STAGE_KINDS", "recipe_module", "stage_config_class", "validate_stage_config"]
