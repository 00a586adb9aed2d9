"""Stage `tokenizer`: train a byte-level BPE tokenizer (with chat template) on a text dataset.

Output: a tokenizer directory that ``AutoTokenizer.from_pretrained`` opens. No checkpoints — BPE
training is a single pass that is cheaper to redo than to resume.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from weightsmith.data.tokenizer import MIN_VOCAB_SIZE
from weightsmith.training.common import StageContext, StageInputs, prepare_output_dir, read_rows, write_dir_atomically


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vocab_size: int = Field(
        4096, ge=MIN_VOCAB_SIZE, description="Target vocabulary incl. 256 byte symbols and special tokens."
    )
    min_frequency: int = Field(2, ge=1, description="A pair must occur this often in the corpus to be merged.")
    model_max_length: int = Field(2048, ge=1, description="Longest input the tokenizer is meant for (saved in its config).")


def run(cfg: Config, inputs: StageInputs, ctx: StageContext) -> dict:
    rows = read_rows(inputs, "tokenizer", "text")
    prepare_output_dir(ctx)

    from weightsmith.data.tokenizer import train_tokenizer

    texts = [str(row["text"]) for row in rows]
    tokenizer = train_tokenizer(
        texts, vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency, model_max_length=cfg.model_max_length
    )
    write_dir_atomically(ctx.output_dir, tokenizer.save_pretrained)

    # The corpus size in the new tokens: what the next stage will train on.
    corpus_tokens = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
    return {
        "steps": 0,
        "final_loss": None,
        "train_tokens": corpus_tokens,
        "resumed_from_step": None,
        "vocab_size": len(tokenizer),
    }
