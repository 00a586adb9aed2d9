"""Training stages: one recipe module per stage, run by ``python -m weightsmith.training.runner SPEC.json``.

Each recipe module defines ``Config`` (a pydantic model: the stage's hyperparameters, every field
with a working default and a description) and ``run(cfg, inputs, ctx) -> dict``. This package
only names them: importing it, and validating a stage config with :func:`stage_config_class` or
:func:`validate_stage_config`, imports no torch, transformers or trl, so a pipeline YAML is
checked before any compute.
"""

from __future__ import annotations

import importlib
import typing
from types import ModuleType
from typing import Any

from pydantic import BaseModel, ValidationError

from weightsmith.errors import UserError, closest, shorten

# Stage kind -> the module holding its ``Config`` and ``run``, in pipeline order. Besides the training
# recipes, stages that produce a dataset follow the same contract and run through the same runner.
STAGE_MODULES: dict[str, str] = {
    "tokenizer": "weightsmith.training.tokenizer",
    "pretrain": "weightsmith.training.pretrain",
    "cpt": "weightsmith.training.cpt",
    "sft": "weightsmith.training.sft",
    "pairs": "weightsmith.synth.pairs",  # preference pairs from the model's own ranked samples
    "dpo": "weightsmith.training.dpo",
    "grpo": "weightsmith.training.grpo",
}
STAGE_KINDS: tuple[str, ...] = tuple(STAGE_MODULES)
# The kinds that train weights or a tokenizer (the recipes in this package).
TRAINING_STAGE_KINDS: tuple[str, ...] = ("tokenizer", "pretrain", "cpt", "sft", "dpo", "grpo")

def recipe_module(kind: str) -> ModuleType:
    """The recipe module for stage ``kind`` (imported on first use)."""
    if kind not in STAGE_KINDS:
        raise UserError(f"unknown stage kind '{kind}'{closest(kind, STAGE_KINDS)}; known: {', '.join(STAGE_KINDS)}.")
    return importlib.import_module(STAGE_MODULES[kind])


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
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        known = list(_model_at(config_class, error["loc"][:-1]).model_fields)
        from weightsmith.config import suggest_key  # the one hint for HF/TRL names (learning_rate → lr)

        hint = suggest_key(str(error["loc"][-1]), known)
        return f"{kind} config: '{key}' is not a setting of the {kind} stage{hint}; known settings: {', '.join(known)}."
    message = str(error["msg"]).removeprefix("Value error, ")
    if not error["loc"]:  # a check across several settings
        return f"{kind} config: {message}."
    return f"{kind} config: '{key}': {message} (got {shorten(error.get('input'))})."


def _model_at(config_class: type[BaseModel], path: tuple) -> type[BaseModel]:
    """The (nested) pydantic model that ``path`` leads to, e.g. LoraSettings for ('lora',)."""
    model = config_class
    for part in path:
        field = model.model_fields.get(str(part))
        if field is None:
            return model
        candidates = [field.annotation, *typing.get_args(field.annotation)]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return model
        model = nested[0]
    return model


__all__ = [
    "STAGE_KINDS",
    "STAGE_MODULES",
    "TRAINING_STAGE_KINDS",
    "recipe_module",
    "stage_config_class",
    "validate_stage_config",
]
