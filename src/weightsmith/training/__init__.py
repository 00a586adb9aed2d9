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
        return (
            f"{kind} config: '{key}' is not a {kind} setting{closest(str(error['loc'][-1]), known)}; "
            f"known settings: {', '.join(known)}."
        )
    return f"{kind} config: '{key}': {error['msg']} (got {error.get('input')!r})."


__all__ = ["STAGE_KINDS", "recipe_module", "stage_config_class", "validate_stage_config"]
