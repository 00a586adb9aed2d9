"""Stage `grpo`: group relative policy optimization over prompts, scored by named rewards.

For each prompt the policy samples ``num_generations`` completions; TRL's GRPOTrainer scores them
with the rewards (plain functions from :mod:`weightsmith.rewards`, the same ones the evals use),
turns the scores into advantages relative to the group and takes a clipped policy-gradient step.
The dataset's other columns (e.g. ``answer``) reach each reward as keyword arguments.
Plain-string prompts are continued as raw text; message-list prompts are rendered with the chat
template (with the row's ``tools``, and an assistant generation prompt). Every prompt is tokenized
once before the model loads, a prompt too long for the model is refused
(:func:`weightsmith.data.chat_prepare.prepare_prompts`), and the trainer generates from those tokens.
A mix of prompt datasets (``data: {prompts: 1.0, hard: 0.5}``) checks the rewards against every
dataset's rows and draws the run's prompts by weight (:mod:`weightsmith.training.mixing`); its
datasets must all hold plain prompts or all message lists.
On a CUDA GPU the completions may come from vLLM instead of ``model.generate`` (``rollouts: {engine:
vllm}``: TRL's ``use_vllm``, colocated in the training process or from a ``trl vllm-serve`` server);
refused in one sentence on the CPU or where vllm is not installed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from weightsmith.errors import UserError
from weightsmith.training.common import (
    FineTuneConfig,
    Precision,
    StageContext,
    StageInputs,
    check_start_model,
    load_causal_lm,
    load_tokenizer,
    log_line,
    missing_cuda_or,
    prepare_output_dir,
    read_rows,
    save_model_dir,
    tokenizer_dir,
    train_with_resume,
    trained_dtype,
    trainer_arguments,
)
from weightsmith.training.lora import check_lora_targets, lora_config


class Rollouts(BaseModel):
    """Who generates GRPO's completions: TRL's own ``model.generate``, or vLLM (TRL's ``use_vllm`` modes)."""

    model_config = ConfigDict(extra="forbid")

    engine: Literal["trl", "vllm"] = Field(
        "trl",
        description="'trl': the policy generates with transformers' generate (any device). 'vllm': TRL hands "
        "generation to vLLM (Kwon et al. 2023, PagedAttention), with the policy's weights synced to it each step; "
        "needs a CUDA GPU and the vllm extra (pip install 'weightsmith[vllm]').",
    )
    vllm_mode: Literal["colocate", "server"] = Field(
        "colocate",
        description="'colocate': vLLM runs inside each training process on the same GPU (no other process). "
        "'server': a separate vLLM server (started with `trl vllm-serve --model MODEL_DIR` on other GPUs) "
        "generates; the stage connects to server_url.",
    )
    gpu_memory_utilization: float = Field(
        0.3, gt=0.0, le=1.0,
        description="colocate only: the share of the GPU's memory vLLM reserves for its weights and KV cache "
        "(the rest trains); a server takes its own flag.",
    )
    server_url: str | None = Field(
        None, description="server only: the vLLM server's base URL (e.g. http://10.0.0.5:8000); null: TRL's default, "
        "0.0.0.0:8000."
    )

    @model_validator(mode="after")
    def _settings_of_the_mode(self) -> Rollouts:
        if self.engine == "trl" and ("vllm_mode" in self.model_fields_set or "server_url" in self.model_fields_set
                                     or "gpu_memory_utilization" in self.model_fields_set):
            raise ValueError("vllm_mode, gpu_memory_utilization and server_url are vLLM settings: set engine: vllm")
        if self.server_url is not None and self.vllm_mode != "server":
            raise ValueError("server_url is for vllm_mode: server (colocate runs vLLM inside the stage)")
        return self

    def trainer_arguments(self) -> dict:
        """The ``GRPOConfig`` fields these settings become ({} for TRL's own generation)."""
        if self.engine == "trl":
            return {}
        if self.vllm_mode == "colocate":
            return {"use_vllm": True, "vllm_mode": "colocate",
                    "vllm_gpu_memory_utilization": self.gpu_memory_utilization}
        url = {"vllm_server_base_url": self.server_url} if self.server_url else {}
        return {"use_vllm": True, "vllm_mode": "server", **url}


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
    rollouts: Rollouts | None = Field(
        None,
        description="Who generates the completions: null or {engine: trl}, TRL's own generation; {engine: vllm, "
        "vllm_mode: colocate | server, gpu_memory_utilization, server_url}, TRL's vLLM integration (CUDA only).",
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
        if self.uses_vllm and self.lora is not None and self.lora.quantize == "8bit":
            # TRL 1.16 hands a 4-bit base to vLLM as bitsandbytes weights and refuses an 8-bit one with a traceback.
            raise ValueError(
                "rollouts.engine: vllm cannot generate from an 8-bit base (vLLM has no in-flight 8-bit quantization): "
                "use lora.quantize: 4bit, or rollouts.engine: trl"
            )
        if self.uses_vllm and self.device == "cpu":
            raise ValueError("rollouts.engine: vllm needs a CUDA GPU; on the CPU use rollouts.engine: trl")
        return self

    def check_engines(self, precision: Precision) -> None:
        """Refuse vLLM rollouts where they cannot run (called by :func:`check_device_settings` at stage start).

        Raises:
            UserError: ``rollouts.engine: vllm`` on the CPU or without vllm installed.
        """
        if self.uses_vllm and (where := missing_cuda_or(precision, "vllm")):
            raise UserError(
                f"rollouts.engine: vllm generates GRPO's completions with vLLM, which needs a CUDA GPU and the vllm "
                f"package (pip install 'weightsmith[vllm]'), but {where}; use rollouts.engine: trl (TRL's own "
                "generation) or leave rollouts out."
            )

    @property
    def uses_vllm(self) -> bool:
        return self.rollouts is not None and self.rollouts.engine == "vllm"

    @property
    def reward_names(self) -> list[str]:
        return [self.reward] if isinstance(self.reward, str) else list(self.reward)


def resolve_rewards(names: list[str], rows: list[dict], data_path: object) -> list[Callable]:
    """Look up each reward, check it against the reward contract on every row, and adapt it for TRL.

    The contract (:mod:`weightsmith.rewards.contract`) is the one the evals use, so a function that
    passes here also scores an eval, and the other way round.

    Raises:
        UserError: before any model is loaded, naming the row, the reward, its function and the
            parameter that no column provides.
    """
    from weightsmith.rewards import get_reward
    from weightsmith.rewards.contract import describe, for_trainer, signature_problem, unprovided

    functions = []
    for name in names:
        function = get_reward(name)
        problem = signature_problem(function, name)
        if problem:
            raise UserError(f"{data_path}: {problem}")
        for line_number, row in enumerate(rows, start=1):
            missing = unprovided(function, row, training=True)
            if missing:
                raise UserError(
                    f"{data_path}, row {line_number}: reward '{name}' ({describe(function)}) needs the column(s) "
                    f"{', '.join(missing)}, which the row lacks (it has: {', '.join(sorted(row))}); add them to "
                    "every row, or give the parameters defaults."
                )
        # TRL logs each reward as rewards/<__name__>/mean: the registered name, or the function's.
        functions.append(for_trainer(function, name.rpartition(":")[2]))
    return functions


def run(cfg: Config, inputs: StageInputs, ctx: StageContext) -> dict:
    if inputs.data_mix is None:
        rows = read_rows(inputs, "grpo", "prompt")
        rewards = resolve_rewards(cfg.reward_names, rows, inputs.data_path)
        conversational = isinstance(rows[0]["prompt"], list)
        if any(isinstance(row["prompt"], list) != conversational for row in rows):
            raise UserError(f"{inputs.data_path}: mixes plain and message-list prompts; use one format per dataset.")
    else:
        sources = _read_mix(inputs, cfg)
        rows = [row for source in sources for row in source.rows]
        rewards = resolve_rewards(cfg.reward_names, sources[0].rows, sources[0].path)  # checked on every source
        conversational = isinstance(rows[0]["prompt"], list)
    model_dir = check_start_model(inputs, "grpo")
    tokenizer_path = tokenizer_dir(inputs, "grpo", model_dir)
    prepare_output_dir(ctx)
    check_lora_targets(cfg.lora, model_dir)

    from datasets import Dataset
    from transformers import set_seed
    from trl import GRPOConfig

    from weightsmith.data.chat import ChatRenderer
    from weightsmith.data.chat_prepare import prepare_prompts, summary
    from weightsmith.training.prepared_trainers import ROW_COLUMN, PreparedGRPOTrainer

    set_seed(ctx.seed)
    tokenizer = load_tokenizer(tokenizer_path, "grpo", need_chat_template=conversational)
    if model_dir is None:
        from weightsmith.training.models import random_init_dir

        model_dir = random_init_dir(inputs.model_init.size, tokenizer, ctx.work_dir, ctx.seed)
    renderer = ChatRenderer(tokenizer, str(tokenizer_path))
    if inputs.data_mix is None:
        prepared = prepare_prompts(
            rows,
            renderer,
            max_completion_length=cfg.max_completion_length,
            context=_context_length(model_dir),
            data_path=inputs.data_path,
        )
        log_line(summary("grpo", prepared.report))
        prompt_ids = [example["prompt_ids"] for example in prepared.examples]
        train_dataset, report = Dataset.from_dict({ROW_COLUMN: list(range(len(rows)))}), prepared.report
    else:
        from weightsmith.training.mixing import examples_per_run, mix

        parts, prompt_ids = [], []
        for source in sources:
            prepared = prepare_prompts(
                source.rows,
                renderer,
                max_completion_length=cfg.max_completion_length,
                context=_context_length(model_dir),
                data_path=source.path,
            )
            log_line(f"{source.name}: {summary('grpo', prepared.report)}")
            source.details = {"prepared": prepared.report}
            # TRL's dataset is row numbers into `rows` (every source's rows, in order); see PreparedGRPOTrainer.
            first = len(prompt_ids)
            parts.append((source, Dataset.from_dict({ROW_COLUMN: list(range(first, first + len(source.rows)))})))
            prompt_ids += [example["prompt_ids"] for example in prepared.examples]
        train_dataset, report = mix(
            parts, examples_per_run(cfg, group=cfg.num_generations), ctx.seed, "grpo", unit="prompts"
        )
    model = load_causal_lm(model_dir, "grpo", cfg)

    args = GRPOConfig(
        # GRPO counts prompt + completion tokens itself; the Trainer's counter would look for input_ids.
        **trainer_arguments(cfg, ctx, count_tokens="no"),
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature,
        beta=cfg.beta,
        scale_rewards=cfg.scale_rewards,
        reward_weights=cfg.reward_weights,
        **(cfg.rollouts.trainer_arguments() if cfg.rollouts is not None else {}),
    )
    trainer = PreparedGRPOTrainer(
        model=model,
        reward_funcs=rewards,
        args=args,
        # TRL's dataset is the row numbers; generation and rewards get the rows themselves (see PreparedGRPOTrainer).
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=lora_config(cfg.lora, model),
        rows=rows,
        prompt_ids=prompt_ids,
    )
    result = train_with_resume(trainer, cfg, ctx)
    save_model_dir(trainer.model, tokenizer, ctx.output_dir, dtype=trained_dtype(trainer))
    return {**result, "lora": cfg.lora is not None, "rewards": cfg.reward_names, "data": report}


def _read_mix(inputs: StageInputs, cfg: Config) -> list:
    """The prompt datasets of a GRPO mix, each checked against the rewards; one kind of prompt in all.

    One kind, because TRL reads a batch as conversational or not from its first row: plain and
    message-list prompts in one batch would hand some rewards completions of the wrong shape.
    """
    from weightsmith.training.mixing import read_sources

    sources = read_sources(inputs, "grpo", ("prompt",))
    kinds = {}
    for source in sources:
        resolve_rewards(cfg.reward_names, source.rows, source.path)
        conversational = {isinstance(row["prompt"], list) for row in source.rows}
        if len(conversational) > 1:
            raise UserError(f"{source.path}: mixes plain and message-list prompts; use one format per dataset.")
        kinds[source.name] = conversational.pop()
    if len(set(kinds.values())) > 1:
        plain = [name for name, is_list in kinds.items() if not is_list]
        listed = [name for name, is_list in kinds.items() if is_list]
        raise UserError(
            f"stage 'grpo': its mix holds plain-text prompts ({', '.join(plain)}) and message-list prompts "
            f"({', '.join(listed)}); a grpo mix uses one kind, as TRL reads each batch as one."
        )
    return sources


def _context_length(model_dir: object) -> int | None:
    """The model's ``max_position_embeddings`` (from its config, without loading weights), or None."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(model_dir))
    except (ValueError, OSError, KeyError):
        return None  # loading the model says what is wrong with it
    value = getattr(config.get_text_config(), "max_position_embeddings", None)
    return int(value) if isinstance(value, int) else None
