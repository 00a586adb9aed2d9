"""Stage `cpt`: continued pre-training of an existing model on a text dataset.

The same packed causal-LM training as `pretrain` (:func:`pretrain.train_on_text`), starting from
``model_path`` instead of a fresh initialization. The tokenizer is the model's own unless
``tokenizer_path`` names another one with the same vocabulary. Like pretrain, it takes a mix of
text datasets (e.g. the new documents with a share of general or earlier data, the standard
remedy for forgetting), and it may start from a random initialization (``model: {init: random}``).
"""

from __future__ import annotations

from pydantic import Field

from weightsmith.errors import UserError
from weightsmith.training.common import (
    StageContext,
    StageInputs,
    TrainStageConfig,
    check_start_model,
    load_causal_lm,
    load_tokenizer,
    prepare_output_dir,
    tokenizer_dir,
)


class Config(TrainStageConfig):
    seq_len: int = Field(128, ge=8, description="Tokens per packed training block.")
    lr: float = Field(1e-4, gt=0.0, description="Peak learning rate (AdamW).")
    warmup_steps: int = Field(5, ge=0, description="Steps of linear warmup from 0 to lr.")


def run(cfg: Config, inputs: StageInputs, ctx: StageContext) -> dict:
    from weightsmith.training.pretrain import read_text

    rows = read_text(inputs, "cpt")
    model_dir = check_start_model(inputs, "cpt")
    tokenizer_path = tokenizer_dir(inputs, "cpt", model_dir)
    prepare_output_dir(ctx)

    from transformers import set_seed

    from weightsmith.training.pretrain import train_on_text

    set_seed(ctx.seed)
    tokenizer = load_tokenizer(tokenizer_path, "cpt")
    if model_dir is None:
        from weightsmith.training.models import random_init_dir

        model_dir = random_init_dir(inputs.model_init.size, tokenizer, ctx.work_dir, ctx.seed, cfg.seq_len)
    model = load_causal_lm(model_dir, "cpt")
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        raise UserError(
            f"stage 'cpt': the tokenizer in {tokenizer_path} has {len(tokenizer)} tokens but the model in "
            f"{model_dir} embeds only {model.get_input_embeddings().num_embeddings}; use the model's own tokenizer."
        )
    return train_on_text(model, tokenizer, rows, cfg, ctx, kind="cpt")
