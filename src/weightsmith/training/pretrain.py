"""Stage `pretrain`: a Llama (or Mixtral mixture-of-experts) causal LM from scratch on a text dataset, with the
stage's tokenizer.

Flow: check inputs -> tokenizer -> model of the named size -> pack the corpus into seq_len blocks
-> train (resuming from work_dir's latest complete checkpoint) -> save. `cpt` reuses
:func:`train_on_text` with a loaded model instead of a fresh one. A mix of text datasets
(``data: {docs: 1.0, general: 0.2}``) packs each dataset into its own blocks and draws the run's
blocks from them by weight (:mod:`weightsmith.training.mixing`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from weightsmith.errors import UserError
from weightsmith.training.common import (
    StageContext,
    StageInputs,
    TrainStageConfig,
    load_tokenizer,
    prepare_output_dir,
    read_rows,
    save_model_dir,
    tokenizer_dir,
    train_with_resume,
    trained_dtype,
    trainer_arguments,
)
from weightsmith.training.mixing import Source
from weightsmith.training.models import MODEL_SIZES

if TYPE_CHECKING:  # pragma: no cover - typing only
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class Config(TrainStageConfig):
    size: Literal[tuple(MODEL_SIZES)] = Field(  # type: ignore[valid-type]
        "tiny", description=f"Named model size: {', '.join(MODEL_SIZES)} (tiny/small run on a laptop CPU; "
        "the -moe sizes are Mixtral-style mixtures of experts: `weightsmith sizes`)."
    )
    seq_len: int = Field(128, ge=8, description="Tokens per packed training block.")
    # From-scratch training of small models likes a larger step than fine-tuning.
    lr: float = Field(1e-3, gt=0.0, description="Peak learning rate (AdamW).")
    warmup_steps: int = Field(5, ge=0, description="Steps of linear warmup from 0 to lr.")
    weight_decay: float = Field(0.1, ge=0.0, description="AdamW decoupled weight decay.")


def run(cfg: Config, inputs: StageInputs, ctx: StageContext) -> dict:
    # Inputs first, before any heavy import: a user mistake costs no compute.
    rows = read_text(inputs, "pretrain")
    tokenizer_path = tokenizer_dir(inputs, "pretrain", model_dir=None)
    prepare_output_dir(ctx)

    from transformers import set_seed

    from weightsmith.training.models import build_model

    # The seed fixes the initial weights; on resume they are replaced by the checkpoint's.
    set_seed(ctx.seed)
    tokenizer = load_tokenizer(tokenizer_path, "pretrain")
    # Some tokenizers report an "unlimited" model_max_length (1e30); the model records a real bound.
    max_positions = max(cfg.seq_len, min(int(tokenizer.model_max_length), 32768))
    model = build_model(cfg.size, tokenizer, max_positions=max_positions)
    return train_on_text(model, tokenizer, rows, cfg, ctx, kind="pretrain")


def read_text(inputs: StageInputs, kind: str) -> list[dict[str, Any]] | list[Source]:
    """The stage's text: the rows of its dataset, or the datasets of its mix (each read and checked)."""
    if inputs.data_mix is not None:
        from weightsmith.training.mixing import read_sources

        return read_sources(inputs, kind, ("text",))
    return read_rows(inputs, kind, "text")


def train_on_text(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: list[dict[str, Any]] | list[Source],
    cfg: TrainStageConfig,
    ctx: StageContext,
    kind: str,
) -> dict:
    """Causal-LM training on packed text, then save ``model`` + ``tokenizer`` to ``ctx.output_dir``.

    Args:
        rows: the dataset's rows, or the sources of a mix (:func:`read_text`): each is packed into its
            own blocks, and the run's blocks are drawn from them by weight.
    """
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    from weightsmith.data.packing import collate_packed_blocks
    from weightsmith.training.moe import RouterLossTrainer, has_router_loss

    seq_len = cfg.seq_len  # type: ignore[attr-defined]  (pretrain and cpt configs both carry it)
    if rows and isinstance(rows[0], Source):
        from weightsmith.training.mixing import examples_per_run, mix

        parts = []
        for source in rows:
            blocks = _blocks(tokenizer, source.rows, seq_len, kind, f"dataset '{source.name}' of the mix")
            parts.append((source, Dataset.from_dict({"input_ids": blocks})))
        dataset, mix_report = mix(parts, examples_per_run(cfg), ctx.seed, kind, unit=f"blocks of {seq_len} tokens")
        n_blocks = sum(entry["examples"] for entry in mix_report["mix"])
    else:
        blocks = _blocks(tokenizer, rows, seq_len, kind, "the dataset")
        dataset, mix_report, n_blocks = Dataset.from_dict({"input_ids": blocks}), None, len(blocks)

    # Packed blocks have no padding, so every input token counts.
    args = TrainingArguments(**trainer_arguments(cfg, ctx, count_tokens="all"))
    # A mixture of experts also trains (and logs) its router's load-balancing loss.
    trainer_class = RouterLossTrainer if has_router_loss(model.config) else Trainer
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collate_packed_blocks,
        processing_class=tokenizer,
    )
    result = train_with_resume(trainer, cfg, ctx)
    save_model_dir(trainer.model, tokenizer, ctx.output_dir, dtype=trained_dtype(trainer))
    return {**result, "train_blocks": n_blocks, "seq_len": seq_len, **({"data": mix_report} if mix_report else {})}


def _blocks(tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]], seq_len: int, kind: str, what: str):
    """The rows' documents packed into ``[n, seq_len]`` blocks; refused when not one block fills."""
    from weightsmith.data.packing import pack_token_ids

    token_ids = list(_tokenize_in_batches(tokenizer, [str(row["text"]) for row in rows]))
    blocks = pack_token_ids(token_ids, seq_len=seq_len, eos_id=tokenizer.eos_token_id)
    if len(blocks) == 0:
        total = sum(len(ids) + 1 for ids in token_ids)
        raise UserError(
            f"stage '{kind}': {what} has {total} tokens, fewer than one block of seq_len={seq_len}; "
            "add text or lower seq_len."
        )
    return blocks


def _tokenize_in_batches(tokenizer: PreTrainedTokenizerBase, texts: list[str], batch_size: int = 1024):
    """Token ids per document as compact arrays (a Python list of ints costs ~8x the memory)."""
    import numpy as np

    for start in range(0, len(texts), batch_size):
        encoded = tokenizer(texts[start : start + batch_size], add_special_tokens=False, verbose=False)["input_ids"]
        yield from (np.asarray(ids, dtype=np.int32) for ids in encoded)
