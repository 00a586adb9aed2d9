"""Stage `sft`: supervised fine-tuning on chat data, loss on the assistant's tokens only.

TRL's SFTTrainer renders each conversation with the tokenizer's chat template and, with
``assistant_only_loss``, trains only on the ``{% generation %}`` spans — the assistant's content
and its closing EOS, so the model learns to stop. Full fine-tuning or LoRA; adapters are merged
into the base on save, so the output is a plain model directory.
"""

from __future__ import annotations

from pydantic import Field

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


class Config(FineTuneConfig):
    max_length: int = Field(512, ge=8, description="Tokens per conversation; longer ones are truncated at the end.")
    assistant_only_loss: bool = Field(
        True, description="Train on assistant turns only (needs {% generation %} markers in the chat template)."
    )
    padding_free: bool = Field(
        True,
        description="Concatenate each batch into one row with per-conversation position ids instead of padding "
        "it: the same loss (attention computed inside each conversation only) without computing on pad tokens "
        "or across conversations. Needs a model built on transformers' attention interface (ours, Llama, "
        "Qwen, Mistral, ...).",
    )
    group_by_length: bool = Field(
        False,
        description="Batch conversations of similar length together: about 2x faster on short chats (less "
        "padding), but batches of look-alike examples generalized worse in our Quill runs (32% vs 43%).",
    )


def check_conversations(rows: list[dict], data_path: object) -> list[dict]:
    """Keep the ``messages`` of each row; every conversation needs an assistant turn to learn from."""
    conversations = []
    for line_number, row in enumerate(rows, start=1):
        messages = row["messages"]
        if not isinstance(messages, list) or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages
        ):
            raise UserError(f"{data_path}, row {line_number}: messages must be a list of {{role, content}} strings.")
        if not any(m["role"] == "assistant" for m in messages):
            raise UserError(f"{data_path}, row {line_number}: the conversation has no assistant turn to train on.")
        conversations.append({"messages": messages})
    return conversations


def run(cfg: Config, inputs: StageInputs, ctx: StageContext) -> dict:
    rows = read_rows(inputs, "sft", "chat")
    conversations = check_conversations(rows, inputs.data_path)
    model_dir = require_model_dir(inputs, "sft")
    tokenizer_path = tokenizer_dir(inputs, "sft", model_dir)
    prepare_output_dir(ctx)

    from datasets import Dataset
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer
    from trl.chat_template_utils import get_training_chat_template

    set_seed(ctx.seed)
    tokenizer = load_tokenizer(tokenizer_path, "sft", need_chat_template=True)
    if cfg.assistant_only_loss:
        try:
            # None when the template already has generation markers; a patched one for templates TRL knows.
            training_template = get_training_chat_template(tokenizer)
        except ValueError as exc:
            raise UserError(
                f"stage 'sft': the chat template of {tokenizer_path} has no {{% generation %}} markers, so the "
                "assistant's tokens cannot be told apart; set assistant_only_loss: false or use our tokenizer."
            ) from exc
        _check_an_answer_fits(tokenizer, training_template, conversations, cfg.max_length, inputs.data_path)
    model = load_causal_lm(model_dir, "sft")
    if cfg.padding_free:
        from weightsmith.training.attention import use_packed_attention

        use_packed_attention(model)  # attend inside each conversation only: same loss, less work

    args = SFTConfig(
        **trainer_arguments(cfg, ctx),
        # TRL refuses max_length with padding_free (it would not enforce it); we truncate below instead.
        max_length=None if cfg.padding_free else cfg.max_length,
        assistant_only_loss=cfg.assistant_only_loss,
        packing=False,
        padding_free=cfg.padding_free,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(conversations),
        processing_class=tokenizer,
        peft_config=lora_config(cfg.lora),
    )
    if cfg.padding_free:
        trainer.train_dataset = _truncate(trainer.train_dataset, cfg.max_length)
    result = train_with_resume(trainer, cfg, ctx)
    save_model_dir(trainer.model, tokenizer, ctx.output_dir)
    return {**result, "lora": cfg.lora is not None}


def _check_an_answer_fits(
    tokenizer, template: str | None, conversations: list[dict], max_length: int, data_path: object
) -> None:
    """Refuse, before any compute, a max_length that cuts every conversation before its answer."""
    for conversation in conversations:
        rendered = tokenizer.apply_chat_template(
            conversation["messages"], chat_template=template, tokenize=True, return_dict=True,
            return_assistant_tokens_mask=True,
        )
        if any(rendered["assistant_masks"][:max_length]):
            return  # usually the first one: this costs one tokenization
    raise UserError(
        f"stage 'sft': max_length {max_length} cuts every conversation of {data_path} before the assistant's "
        "answer, so there is nothing to learn; raise max_length."
    )


def _truncate(dataset, max_length: int):
    """Cut tokenized conversations to ``max_length`` tokens, as TRL does when it pads; drop any left with no loss."""
    dataset = dataset.map(lambda ex: {"input_ids": ex["input_ids"][:max_length], "labels": ex["labels"][:max_length]})
    return dataset.filter(lambda ex: any(label != -100 for label in ex["labels"]))
