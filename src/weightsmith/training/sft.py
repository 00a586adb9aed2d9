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
            get_training_chat_template(tokenizer)
        except ValueError as exc:
            raise UserError(
                f"stage 'sft': the chat template of {tokenizer_path} has no {{% generation %}} markers, so the "
                "assistant's tokens cannot be told apart; set assistant_only_loss: false or use our tokenizer."
            ) from exc
    model = load_causal_lm(model_dir, "sft")

    args = SFTConfig(
        **trainer_arguments(cfg, ctx),
        max_length=cfg.max_length,
        assistant_only_loss=cfg.assistant_only_loss,
        packing=False,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(conversations),
        processing_class=tokenizer,
        peft_config=lora_config(cfg.lora),
    )
    result = train_with_resume(trainer, cfg, ctx)
    save_model_dir(trainer.model, tokenizer, ctx.output_dir)
    return {**result, "lora": cfg.lora is not None}
