"""Stage `dpo`: direct preference optimization against the frozen input model.

TRL's DPOTrainer. The reference model is the input model itself: with LoRA, the policy with its
adapters switched off; for full fine-tuning, a second copy that DPOTrainer loads from the
model's ``name_or_path`` — which is ``model_path``, because we load the policy from there. On a
resume the policy comes from the checkpoint and the reference still from ``model_path``.

Rows are TRL's plain (strings, concatenated as is) or conversational format (messages, rendered
with the chat template, with the row's ``tools``); one dataset uses one of the two. Every pair is
tokenized once before the model loads, as DPOTrainer would, and what ``max_length`` drops or cuts
is counted (:func:`weightsmith.data.chat_prepare.prepare_preferences`); the trainer gets those tokens.
A mix of preference datasets (``data: {prefs: 1.0, older_prefs: 0.5}``) prepares each on its own
(each plain or conversational) and draws the run's pairs by weight (:mod:`weightsmith.training.mixing`).
A random initialization (``model: {init: random}``) is its own frozen reference.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from weightsmith.data.chat_prepare import TRUNCATION_FRACTION_HELP
from weightsmith.errors import UserError
from weightsmith.training.common import (
    FineTuneConfig,
    StageContext,
    StageInputs,
    check_start_model,
    load_causal_lm,
    load_tokenizer,
    log_line,
    prepare_output_dir,
    read_rows,
    save_model_dir,
    tokenizer_dir,
    train_with_resume,
    trained_dtype,
    trainer_arguments,
)
from weightsmith.training.lora import check_lora_targets, lora_config

_PREFERENCE_KEYS = ("prompt", "chosen", "rejected")


class Config(FineTuneConfig):
    lr: float = Field(5e-6, gt=0.0, description="Peak learning rate (AdamW).")
    max_length: int = Field(
        512,
        ge=8,
        description="Tokens per prompt + response; a longer answer is cut at the end, and a pair whose prompt alone "
        "fills it is dropped. Both are counted in the log and result.json.",
    )
    max_truncated_fraction: float = Field(
        0.05, ge=0.0, le=1.0, description=TRUNCATION_FRACTION_HELP.format(what="pairs")
    )
    beta: float = Field(0.1, gt=0.0, description="Strength of the pull towards the reference model (higher = closer).")
    loss_type: Literal["sigmoid", "ipo", "hinge", "robust"] = Field(
        "sigmoid", description="DPO loss variant: sigmoid (the DPO paper), ipo, hinge or robust."
    )
    sft_weight: float = Field(
        0.0,
        ge=0.0,
        description="Add this much of the chosen answers' SFT loss to the DPO loss (RPO); keeps a small model "
        "from unlearning what it got right while it learns what to avoid. 0 is plain DPO.",
    )


def check_preferences(rows: list[dict], data_path: object) -> tuple[list[dict], bool]:
    """Keep prompt/chosen/rejected (and tools) of each row; return them and whether they are conversational."""
    pairs, conversational = [], None
    for line_number, row in enumerate(rows, start=1):
        kinds = {isinstance(row[key], list) for key in _PREFERENCE_KEYS}
        valid = all(isinstance(row[key], (str, list)) for key in _PREFERENCE_KEYS)
        if not valid or len(kinds) != 1:
            raise UserError(
                f"{data_path}, row {line_number}: prompt, chosen and rejected must all be strings or all be "
                "message lists."
            )
        row_conversational = kinds.pop()
        if conversational is None:
            conversational = row_conversational
        elif conversational != row_conversational:
            raise UserError(
                f"{data_path}, row {line_number}: mixes plain and conversational rows; use one format per dataset."
            )
        tools = {"tools": row["tools"]} if row.get("tools") else {}
        pairs.append({key: row[key] for key in _PREFERENCE_KEYS} | tools)
    return pairs, bool(conversational)


def run(cfg: Config, inputs: StageInputs, ctx: StageContext) -> dict:
    if inputs.data_mix is None:
        pairs, conversational = check_preferences(read_rows(inputs, "dpo", "preference"), inputs.data_path)
    else:
        from weightsmith.training.mixing import read_sources

        sources = read_sources(inputs, "dpo", ("preference",))
        for source in sources:
            source.rows, source.details["conversational"] = check_preferences(source.rows, source.path)
        conversational = any(source.details["conversational"] for source in sources)
    model_dir = check_start_model(inputs, "dpo")
    tokenizer_path = tokenizer_dir(inputs, "dpo", model_dir)
    prepare_output_dir(ctx)
    check_lora_targets(cfg.lora, model_dir)

    from datasets import Dataset
    from transformers import set_seed
    from trl import DPOConfig

    from weightsmith.data.chat import ChatRenderer
    from weightsmith.data.chat_prepare import prepare_preferences, summary
    from weightsmith.training.prepared_trainers import PreparedDPOTrainer

    set_seed(ctx.seed)
    tokenizer = load_tokenizer(tokenizer_path, "dpo", need_chat_template=conversational)
    renderer = ChatRenderer(tokenizer, str(tokenizer_path))
    if inputs.data_mix is None:
        prepared = prepare_preferences(
            pairs,
            renderer,
            conversational=conversational,
            max_length=cfg.max_length,
            max_truncated_fraction=cfg.max_truncated_fraction,
            data_path=inputs.data_path,
        )
        log_line(summary("dpo", prepared.report))
        train_dataset, report = Dataset.from_list(prepared.examples), prepared.report
    else:
        from weightsmith.training.mixing import examples_per_run, mix

        parts = []
        for source in sources:
            prepared = prepare_preferences(
                source.rows,
                renderer,
                conversational=source.details.pop("conversational"),
                max_length=cfg.max_length,
                max_truncated_fraction=cfg.max_truncated_fraction,
                data_path=source.path,
            )
            log_line(f"{source.name}: {summary('dpo', prepared.report)}")
            source.details = {"prepared": prepared.report}
            parts.append((source, prepared.examples))
        train_dataset, report = mix(parts, examples_per_run(cfg), ctx.seed, "dpo", unit="pairs")
    if model_dir is None:
        from weightsmith.training.models import random_init_dir

        model_dir = random_init_dir(inputs.model_init.size, tokenizer, ctx.work_dir, ctx.seed, cfg.max_length)
    model = load_causal_lm(model_dir, "dpo", cfg)

    args = DPOConfig(
        **trainer_arguments(cfg, ctx),
        max_length=cfg.max_length,
        beta=cfg.beta,
        # TRL combines several losses by weight; "sft" is the NLL of the chosen response.
        loss_type=[cfg.loss_type, "sft"] if cfg.sft_weight > 0 else [cfg.loss_type],
        loss_weights=[1.0, cfg.sft_weight] if cfg.sft_weight > 0 else None,
    )
    trainer = PreparedDPOTrainer(
        model=model,
        ref_model=None,  # built from model_path (full) or the adapter-free policy (LoRA); see module doc
        args=args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=lora_config(cfg.lora, model),
    )
    result = train_with_resume(trainer, cfg, ctx)
    save_model_dir(trainer.model, tokenizer, ctx.output_dir, dtype=trained_dtype(trainer))
    return {**result, "lora": cfg.lora is not None, "data": report}
