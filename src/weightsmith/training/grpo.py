"""Stage `grpo`: group relative policy optimization over prompts, scored by named rewards.

For each prompt the policy samples ``num_generations`` completions; TRL's GRPOTrainer scores them
with the rewards (plain functions from :mod:`weightsmith.rewards`, the same ones the evals use),
turns the scores into advantages relative to the group and takes a clipped policy-gradient step.
The dataset's other columns (e.g. ``answer``) reach each reward as keyword arguments.
Plain-string prompts are continued as raw text; message-list prompts are rendered with the chat
template (and an assistant generation prompt).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Literal

from pydantic import Field, model_validator

from weightsmith.errors import UserError
from weightsmith.training.common import (
    FineTuneConfig,
    StageContext,
    StageInputs,
    load_causal_lm,
    load_tokenizer,
    lora_config,
    prepare_output_dir,
    read_rows,
    require_model_dir,
    save_model_dir,
    tokenizer_dir,
    train_with_resume,
    trainer_arguments,
)

# Keyword arguments GRPOTrainer itself passes to every reward, besides the dataset's columns.
_TRAINER_REWARD_KWARGS = {"prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric", "environments"}


class Config(FineTuneConfig):
    lr: float = Field(1e-6, gt=0.0, description="Peak learning rate (AdamW).")
    reward: str | list[str] = Field(
        "exact_match",
        description="Reward name(s) from weightsmith.rewards, or 'package.module:function'; summed (see reward_weights).",
    )
    reward_weights: list[float] | None = Field(None, description="Weight per reward; null weighs each 1.0.")
    num_generations: int = Field(4, ge=2, description="Completions sampled per prompt (the group).")
    max_completion_length: int = Field(64, ge=1, description="Most tokens generated per completion.")
    temperature: float = Field(1.0, gt=0.0, description="Sampling temperature for the completions.")
    beta: float = Field(0.0, ge=0.0, description="KL penalty towards the input model (0 loads no reference model).")
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group",
        description="Divide each advantage by the reward std of its group (GRPO), of the whole batch, or not at all "
        "(Dr. GRPO). With a partial-credit reward, 'group' blows a 0.1-vs-0 difference in a group that got "
        "nothing right up to the same size as right-vs-wrong.",
    )

    @model_validator(mode="after")
    def _groups_fit_in_a_batch(self) -> Config:
        # TRL samples whole groups: a batch must hold a whole number of them.
        if self.batch_size % self.num_generations != 0:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of num_generations ({self.num_generations})"
            )
        names = [self.reward] if isinstance(self.reward, str) else self.reward
        if not names:
            raise ValueError("reward must name at least one reward")
        if self.reward_weights is not None and len(self.reward_weights) != len(names):
            raise ValueError(f"reward_weights has {len(self.reward_weights)} entries for {len(names)} rewards")
        return self

    @property
    def reward_names(self) -> list[str]:
        return [self.reward] if isinstance(self.reward, str) else list(self.reward)


def resolve_rewards(names: list[str], rows: list[dict], data_path: object) -> list[Callable]:
    """Look up each reward and check every row carries the columns it requires."""
    from weightsmith.rewards import get_reward

    functions = []
    for name in names:
        function = get_reward(name)
        required = [
            parameter.name
            for parameter in inspect.signature(function).parameters.values()
            if parameter.default is inspect.Parameter.empty
            and parameter.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
            and parameter.name not in _TRAINER_REWARD_KWARGS
        ]
        for line_number, row in enumerate(rows, start=1):
            missing = [column for column in required if column not in row]
            if missing:
                raise UserError(
                    f"{data_path}, row {line_number}: reward '{name}' needs the column(s) {', '.join(missing)}."
                )
        functions.append(function)
    return functions


def run(cfg: Config, inputs: StageInputs, ctx: StageContext) -> dict:
    rows = read_rows(inputs, "grpo", "prompt")
    rewards = resolve_rewards(cfg.reward_names, rows, inputs.data_path)
    conversational = isinstance(rows[0]["prompt"], list)
    if any(isinstance(row["prompt"], list) != conversational for row in rows):
        raise UserError(f"{inputs.data_path}: mixes plain and message-list prompts; use one format per dataset.")
    model_dir = require_model_dir(inputs, "grpo")
    tokenizer_path = tokenizer_dir(inputs, "grpo", model_dir)
    prepare_output_dir(ctx)

    from datasets import Dataset
    from transformers import set_seed
    from trl import GRPOConfig

    from weightsmith.training.grpo_resume import ResumableGRPOTrainer

    set_seed(ctx.seed)
    tokenizer = load_tokenizer(tokenizer_path, "grpo", need_chat_template=conversational)
    model = load_causal_lm(model_dir, "grpo")

    args = GRPOConfig(
        # GRPO counts prompt + completion tokens itself; the Trainer's counter would look for input_ids.
        **trainer_arguments(cfg, ctx, count_tokens="no"),
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature,
        beta=cfg.beta,
        scale_rewards=cfg.scale_rewards,
        reward_weights=cfg.reward_weights,
    )
    trainer = ResumableGRPOTrainer(
        model=model,
        reward_funcs=rewards,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora_config(cfg.lora),
    )
    result = train_with_resume(trainer, cfg, ctx)
    save_model_dir(trainer.model, tokenizer, ctx.output_dir)
    return {**result, "lora": cfg.lora is not None, "rewards": cfg.reward_names}
