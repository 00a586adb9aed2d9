"""Named model sizes for training from scratch: a Llama architecture built from a config.

``tiny`` is for tests, ``small`` for the laptop quickstart; the rest want a GPU. The vocabulary
size and the special-token ids come from the tokenizer, never from this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - typing only
    from transformers import LlamaForCausalLM, PreTrainedTokenizerBase


@dataclass(frozen=True)
class ModelSize:
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    # Tying input and output embeddings halves the embedding parameters, which dominate small models.
    tie_embeddings: bool


MODEL_SIZES: dict[str, ModelSize] = {
    "tiny": ModelSize(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=4, intermediate_size=256, tie_embeddings=True),
    "small": ModelSize(hidden_size=256, num_layers=4, num_heads=8, num_kv_heads=8, intermediate_size=1024, tie_embeddings=True),
    "base": ModelSize(hidden_size=512, num_layers=8, num_heads=8, num_kv_heads=8, intermediate_size=2048, tie_embeddings=True),
    "medium": ModelSize(hidden_size=1024, num_layers=16, num_heads=16, num_kv_heads=8, intermediate_size=2816, tie_embeddings=False),
    "large": ModelSize(hidden_size=2048, num_layers=24, num_heads=16, num_kv_heads=8, intermediate_size=5632, tie_embeddings=False),
}


def build_model(size: str, tokenizer: PreTrainedTokenizerBase, max_positions: int) -> LlamaForCausalLM:
    """A freshly initialized Llama causal LM of the named size, matching ``tokenizer``'s vocabulary.

    Args:
        size: a key of :data:`MODEL_SIZES`.
        tokenizer: its length sets the vocabulary and its special tokens set the config ids.
        max_positions: the longest sequence the model is meant for (RoPE needs no learned table,
            but the config records it and generation checks against it).
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    spec = MODEL_SIZES[size]
    config = LlamaConfig(
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
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model
