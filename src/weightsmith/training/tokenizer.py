"""Stage `tokenizer`: train a byte-level BPE tokenizer (with chat template) on a text dataset.

Output: a tokenizer directory that ``AutoTokenizer.from_pretrained`` opens. No checkpoints — BPE
training is a single pass that is cheaper to redo than to resume.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from weightsmith.data.tokenizer import MIN_VOCAB_SIZE
from weightsmith.training.common import (
    THREADS_HELP, StageContext, StageInputs, log_line, prepare_output_dir, read_rows, write_dir_atomically)


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vocab_size: int = Field(
        4096, ge=MIN_VOCAB_SIZE, description="Target vocabulary incl. 256 byte symbols and special tokens."
    )
    min_frequency: int = Field(2, ge=1, description="A pair must occur this often in the corpus to be merged.")
    model_max_length: int = Field(2048, ge=1, description="Longest input the tokenizer is meant for (saved in its config).")
    threads: int | None = Field(None, ge=1, description=THREADS_HELP)


def run(cfg: Config, inputs: StageInputs, ctx: StageContext) -> dict:
    if inputs.data_mix is None:
        rows = read_rows(inputs, "tokenizer", "text")
    else:
        from weightsmith.training.mixing import read_sources

        sources = read_sources(inputs, "tokenizer", ("text",))
    prepare_output_dir(ctx)

    from weightsmith.data.tokenizer import train_tokenizer, vocab_shortfall

    mix_report = None
    if inputs.data_mix is None:
        texts = [str(row["text"]) for row in rows]
    else:
        # A mix weighs the documents the merges are learnt from: as many documents as the datasets
        # hold together, each drawn from a dataset in proportion to its weight.
        from weightsmith.training.mixing import mix

        parts = [(source, [{"text": str(row["text"])} for row in source.rows]) for source in sources]
        mixed, mix_report = mix(parts, sum(len(source.rows) for source in sources), ctx.seed, "tokenizer", "documents")
        texts = mixed[:]["text"]
    tokenizer = train_tokenizer(
        texts, vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency, model_max_length=cfg.model_max_length
    )
    write_dir_atomically(ctx.output_dir, tokenizer.save_pretrained)

    # The corpus size in the new tokens: what the next stage will train on.
    corpus_tokens = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
    # A small corpus runs out of pairs to merge before vocab_size: said in the log and the result, not silently.
    shortfall = vocab_shortfall(cfg.vocab_size, len(tokenizer), cfg.min_frequency)
    if shortfall:
        log_line(f"note: {shortfall}")
    return {
        "steps": 0,
        "final_loss": None,
        "train_tokens": corpus_tokens,
        "resumed_from_step": None,
        "vocab_size": len(tokenizer),
        "vocab_size_requested": cfg.vocab_size,
        "warnings": [shortfall] if shortfall else [],
        **({"data": mix_report} if mix_report else {}),
    }
