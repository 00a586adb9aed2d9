"""Stage `sft`: supervised fine-tuning on chat data, loss on the assistant's tokens only.

Every conversation is rendered with the tokenizer's chat template (its ``tools`` too), masked and
cut to ``max_length`` once, before the model loads (:func:`weightsmith.data.chat_prepare.prepare_sft`):
with ``assistant_only_loss`` only the answers train — each answer's content and its closing EOS,
so the model learns to stop — and an answer with OpenAI's ``weight: 0`` never does. TRL's
SFTTrainer then trains on exactly those tokens and labels. Full fine-tuning or LoRA; adapters are
merged into the base on save, so the output is a plain model directory.

A mix (``data: {qa: 1.0, docs: 0.3}``, :mod:`weightsmith.training.mixing`) may hold text datasets
next to the chat ones: they are replay, packed into ``max_length`` blocks whose every token is a
target (:func:`weightsmith.data.chat_prepare.prepare_replay`), while the chat rows keep their
assistant-only labels; both are ``input_ids`` + ``labels`` rows to the trainer and its collator.
The stage may start from a random initialization (``model: {init: random, size: ...}``) instead
of a model directory.
"""

from __future__ import annotations

from typing import Any

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


class Config(FineTuneConfig):
    max_length: int = Field(
        512,
        ge=8,
        description="Tokens per conversation; a longer one is cut at the end (its last answer loses its end, "
        "end-of-turn included) or, with no answer token left, dropped. Both are counted in the log and result.json.",
    )
    max_truncated_fraction: float = Field(
        0.05, ge=0.0, le=1.0, description=TRUNCATION_FRACTION_HELP.format(what="conversations")
    )
    assistant_only_loss: bool = Field(
        True,
        description="Train on assistant turns only. The answers are found by the chat template's {% generation %} "
        "markers (ours has them; TRL adds them to Qwen, Llama and other templates it knows), else by rendering "
        "the conversation up to each answer.",
    )
    padding_free: bool = Field(
        True,
        description="Concatenate each batch into one row with per-conversation position ids instead of padding "
        "it: the same loss (attention computed inside each conversation only) without computing on pad tokens "
        "or across conversations. Needs a model built on transformers' attention interface (ours, Llama, "
        "Qwen, Mistral, ...).",
    )
    fused_lm_head: bool | None = Field(
        None,
        description="Compute the loss through TRL's fused LM head (log-probabilities in tiles, never the whole logits: "
        "saves memory with a large vocabulary on a GPU) or through the model's own logits (faster for small models: "
        "1.22x the steps/s of the Quill quickstart's SFT on the CPU). Default: fused on CUDA, logits on the CPU.",
    )
    group_by_length: bool = Field(
        False,
        description="Batch conversations of similar length together: about 2x faster on short chats (less "
        "padding), but batches of look-alike examples generalized worse in our Quill runs (32% vs 43%).",
    )


def check_conversations(rows: list[dict], data_path: object) -> list[dict]:
    """Keep the ``messages`` (and ``tools``) of each row; every conversation needs an assistant turn to learn from."""
    conversations = []
    for line_number, row in enumerate(rows, start=1):
        messages = row["messages"]
        if not isinstance(messages, list) or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str)
            # An assistant turn that only calls tools may have no text (OpenAI's content: null).
            and (isinstance(m.get("content"), str) or (m.get("content") is None and m.get("tool_calls")))
            for m in messages
        ):
            raise UserError(f"{data_path}, row {line_number}: messages must be a list of {{role, content}} strings.")
        if not any(m["role"] == "assistant" for m in messages):
            raise UserError(f"{data_path}, row {line_number}: the conversation has no assistant turn to train on.")
        conversations.append({"messages": messages, **({"tools": row["tools"]} if row.get("tools") else {})})
    return conversations


def run(cfg: Config, inputs: StageInputs, ctx: StageContext) -> dict:
    trainer, report = build_trainer(cfg, inputs, ctx)
    result = train_with_resume(trainer, cfg, ctx)
    save_model_dir(trainer.model, trainer.processing_class, ctx.output_dir, dtype=trained_dtype(trainer))
    return {**result, "lora": cfg.lora is not None, "data": report}


def build_trainer(cfg: Config, inputs: StageInputs, ctx: StageContext) -> tuple[Any, dict]:
    """Everything before the first step: the checks, the data (prepared, counted or refused), the model.

    Returns:
        The SFTTrainer, and the data report for ``result.json`` (see :func:`prepare_sft`).
    """
    if inputs.data_mix is None:
        conversations = check_conversations(read_rows(inputs, "sft", "chat"), inputs.data_path)
    else:
        sources = _read_mix(inputs)
    model_dir = check_start_model(inputs, "sft")
    tokenizer_path = tokenizer_dir(inputs, "sft", model_dir)
    prepare_output_dir(ctx)
    check_lora_targets(cfg.lora, model_dir)

    from datasets import Dataset
    from transformers import set_seed
    from trl import SFTConfig

    from weightsmith.data.chat import ChatRenderer
    from weightsmith.data.chat_prepare import prepare_sft, summary

    set_seed(ctx.seed)
    tokenizer = load_tokenizer(tokenizer_path, "sft", need_chat_template=True)
    renderer = ChatRenderer.for_training(tokenizer, tokenizer_path, cfg.assistant_only_loss)
    # Rendered, masked and cut here, before the model loads: a refusal costs no compute, and the
    # trainer gets exactly the tokens and labels counted.
    if inputs.data_mix is None:
        prepared = prepare_sft(
            conversations,
            renderer,
            max_length=cfg.max_length,
            assistant_only_loss=cfg.assistant_only_loss,
            max_truncated_fraction=cfg.max_truncated_fraction,
            data_path=inputs.data_path,
        )
        log_line(summary("sft", prepared.report))
        train_dataset, report = Dataset.from_list(prepared.examples), prepared.report
    else:
        train_dataset, report = _prepare_mix(cfg, sources, renderer, ctx)
    if model_dir is None:
        from weightsmith.training.models import random_init_dir

        model_dir = random_init_dir(inputs.model_init.size, tokenizer, ctx.work_dir, ctx.seed, cfg.max_length)
    model = load_causal_lm(model_dir, "sft", cfg)
    if cfg.padding_free:
        from weightsmith.training.attention import use_packed_attention

        use_packed_attention(model)  # attend inside each conversation only: same loss, less work

    args = SFTConfig(
        **trainer_arguments(cfg, ctx),
        # The rows are cut to max_length already (TRL refuses max_length with padding_free: it would not
        # enforce it); with padding, TRL's own cut finds nothing left to cut or drop.
        max_length=None if cfg.padding_free else cfg.max_length,
        # Our labels are the loss mask (answers only, weight-0 turns out); TRL keeps a dataset's labels as they are.
        assistant_only_loss=False,
        packing=False,
        padding_free=cfg.padding_free,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
    )
    from weightsmith.training.lm_head import sft_trainer_class  # imports TRL: only where a stage runs

    trainer_class = sft_trainer_class(cfg.fused_lm_head, args.device.type)
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=lora_config(cfg.lora, model),
    )
    return trainer, report


def _read_mix(inputs: StageInputs) -> list:
    """The datasets of an SFT mix: chat to fine-tune on, text to replay; at least one chat dataset."""
    from weightsmith.training.mixing import read_sources

    sources = read_sources(inputs, "sft", ("chat", "text"))
    if not any(source.format == "chat" for source in sources):
        raise UserError(
            f"stage 'sft': its mix ({', '.join(source.name for source in sources)}) holds no chat dataset; an sft "
            "mix fine-tunes on chat data and replays its text datasets next to it (text alone is a cpt stage)."
        )
    for source in sources:
        if source.format == "chat":
            source.rows = check_conversations(source.rows, source.path)
    return sources


def _prepare_mix(cfg: Config, sources: list, renderer: Any, ctx: StageContext) -> tuple[Any, dict]:
    """Each dataset prepared on its own (chat: masked and cut; text: packed for replay), then mixed by weight."""
    from weightsmith.data.chat_prepare import prepare_replay, prepare_sft, summary
    from weightsmith.training.mixing import examples_per_run, mix

    parts = []
    for source in sources:
        if source.format == "chat":
            prepared = prepare_sft(
                source.rows,
                renderer,
                max_length=cfg.max_length,
                assistant_only_loss=cfg.assistant_only_loss,
                max_truncated_fraction=cfg.max_truncated_fraction,
                data_path=source.path,
            )
        else:
            prepared = prepare_replay(source.rows, renderer.tokenizer, max_length=cfg.max_length, data_path=source.path)
        log_line(f"{source.name}: {summary('sft', prepared.report)}")
        source.details = {"prepared": prepared.report}
        parts.append((source, prepared.examples))
    return mix(parts, examples_per_run(cfg), ctx.seed, "sft", unit="conversations and replay blocks")
