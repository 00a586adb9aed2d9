"""Named model sizes for training from scratch: a Llama architecture built from a config, or a
Mixtral-style mixture of experts for the ``*-moe`` sizes.

``tiny`` is for tests, ``small`` for the laptop quickstart; the rest want a GPU. The vocabulary
size and the special-token ids come from the tokenizer, never from this table.

An MoE size replaces each layer's MLP with ``num_experts`` MLPs of ``intermediate_size`` and a
router that sends every token to ``experts_per_token`` of them (Jiang et al. 2024, Mixtral of
Experts; transformers' ``MixtralForCausalLM``). Each ``X-moe`` routes a token through as many MLP
parameters as the dense ``X`` (its experts are 1/k as wide), so it costs about the same per
token while holding num_experts/k times the MLP parameters. Training adds the router's
load-balancing loss (Fedus et al. 2022, Switch Transformers, eqs. 4-6) times
:data:`ROUTER_AUX_LOSS_COEF` to the loss and logs it as ``aux_loss``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - typing only
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# The weight of the load-balancing loss: Switch Transformers' alpha = 1e-2 (Fedus et al. 2022, sec. 2.2).
ROUTER_AUX_LOSS_COEF = 0.01


@dataclass(frozen=True)
class ModelSize:
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    # Tying input and output embeddings halves the embedding parameters, which dominate small models.
    tie_embeddings: bool
    # 0: a dense Llama. Otherwise a Mixtral MoE: this many expert MLPs of intermediate_size per layer...
    num_experts: int = 0
    # ...of which the router picks this many for each token (its top-k).
    experts_per_token: int = 0

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0


MODEL_SIZES: dict[str, ModelSize] = {
    "tiny": ModelSize(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=4, intermediate_size=256, tie_embeddings=True),
    "small": ModelSize(hidden_size=256, num_layers=4, num_heads=8, num_kv_heads=8, intermediate_size=1024, tie_embeddings=True),
    "base": ModelSize(hidden_size=512, num_layers=8, num_heads=8, num_kv_heads=8, intermediate_size=2048, tie_embeddings=True),
    "medium": ModelSize(hidden_size=1024, num_layers=16, num_heads=16, num_kv_heads=8, intermediate_size=2816, tie_embeddings=False),
    "large": ModelSize(hidden_size=2048, num_layers=24, num_heads=16, num_kv_heads=8, intermediate_size=5632, tie_embeddings=False),
    "tiny-moe": ModelSize(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=4, intermediate_size=128, tie_embeddings=True,
                          num_experts=4, experts_per_token=2),
    "small-moe": ModelSize(hidden_size=256, num_layers=4, num_heads=8, num_kv_heads=8, intermediate_size=512,
                           tie_embeddings=True, num_experts=8, experts_per_token=2),
    "base-moe": ModelSize(hidden_size=512, num_layers=8, num_heads=8, num_kv_heads=8, intermediate_size=1024,
                          tie_embeddings=True, num_experts=8, experts_per_token=2),
}


def build_model(size: str, tokenizer: PreTrainedTokenizerBase, max_positions: int) -> PreTrainedModel:
    """A freshly initialized causal LM of the named size, matching ``tokenizer``'s vocabulary.

    A ``LlamaForCausalLM``, or a ``MixtralForCausalLM`` for an MoE size. The Mixtral config records
    ``router_aux_loss_coef`` (:data:`ROUTER_AUX_LOSS_COEF`) and ``output_router_logits: false``: the
    trainers ask for the router logits while they train (TRL's, and the pretrain stage's
    :class:`~weightsmith.training.moe.RouterLossTrainer`), and inference never computes them.

    Args:
        size: a key of :data:`MODEL_SIZES`.
        tokenizer: its length sets the vocabulary and its special tokens set the config ids.
        max_positions: the longest sequence the model is meant for (RoPE needs no learned table,
            but the config records it and generation checks against it).
    """
    from transformers import LlamaConfig, LlamaForCausalLM, MixtralConfig, MixtralForCausalLM

    spec = MODEL_SIZES[size]
    moe = (
        dict(num_local_experts=spec.num_experts, num_experts_per_tok=spec.experts_per_token,
             router_aux_loss_coef=ROUTER_AUX_LOSS_COEF, output_router_logits=False)
        if spec.is_moe else {}
    )
    config = (MixtralConfig if spec.is_moe else LlamaConfig)(
        **moe,
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        intermediate_size=spec.intermediate_size,
        max_position_embeddings=max_positions,
        tie_word_embeddings=spec.tie_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = (MixtralForCausalLM if spec.is_moe else LlamaForCausalLM)(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def random_init_dir(
    size: str, tokenizer: PreTrainedTokenizerBase, work_dir: Path, seed: int, min_positions: int = 0
) -> Path:
    """A freshly initialized model of ``size``, saved under ``work_dir``: where ``model: {init: random}`` starts.

    The stage then loads it like any input model, so every recipe (DPO's frozen reference included,
    which TRL loads from the model's folder) treats it as it treats a trained one. It is written
    once per job and never registered: the stage's output is the only version it leaves, and its
    lineage says ``init: random (size ...)`` instead of naming a parent.

    The weights are those the pretrain stage starts from with the same seed, size and tokenizer
    (``set_seed(seed)`` then :func:`build_model`), so a random-init ablation matches a pretrain's
    starting point. Under torchrun every rank builds the same weights and the first to finish puts
    its copy in place.

    Args:
        size: a key of :data:`MODEL_SIZES`.
        tokenizer: sets the vocabulary and special-token ids.
        work_dir: the job's work folder (kept across retries, so a resumed run finds the same init).
        seed: the stage seed.
        min_positions: the longest sequence the stage trains on; the model's positions cover at least
            this and the tokenizer's ``model_max_length`` (capped at 32,768), as in pretrain.

    Returns:
        The model folder (config.json, model.safetensors, the tokenizer).
    """
    import os
    import shutil

    from transformers import set_seed

    target = Path(work_dir) / f"init-random-{size}-seed{seed}"
    if (target / "config.json").is_file():
        return target
    set_seed(seed)
    max_positions = max(min_positions, min(int(tokenizer.model_max_length), 32768))
    model = build_model(size, tokenizer, max_positions=max_positions)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    try:
        os.rename(partial, target)
    except OSError:  # another rank put the same weights in place first
        shutil.rmtree(partial, ignore_errors=True)
    return target
