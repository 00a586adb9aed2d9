"""``restore_renamed_weights`` (run before every resume): a no-op for a dense model's and a LoRA adapter's
checkpoint, which the Trainer's own resume loads as before; it loads only a checkpoint whose file names differ
from the model's in-memory names (Mixtral's experts)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, MixtralConfig, MixtralForCausalLM

from weightsmith.training.moe import restore_renamed_weights


def _fresh(config) -> torch.nn.Module:
    torch.manual_seed(1)
    return AutoModelForCausalLM.from_config(config)


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def _unchanged(model, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(tensor, before[name]) for name, tensor in model.state_dict().items())


def test_a_dense_or_lora_checkpoint_is_left_to_the_trainer(tmp_path: Path, tiny_model_dir: Path):
    from peft import LoraConfig, get_peft_model

    tied = AutoConfig.from_pretrained(tiny_model_dir)
    assert tied.tie_word_embeddings  # the tiny size ties its output head (saved once)
    untied = AutoConfig.from_pretrained(tiny_model_dir, tie_word_embeddings=False)
    for name, config, shard in (("tied", tied, None), ("untied", untied, None), ("sharded", untied, "100KB")):
        checkpoint = tmp_path / name
        _fresh(config).save_pretrained(checkpoint, **({"max_shard_size": shard} if shard else {}))
        assert (checkpoint / ("model.safetensors.index.json" if shard else "model.safetensors")).is_file()
        model = _fresh(config)
        with torch.no_grad():
            model.model.embed_tokens.weight.add_(1.0)  # differs from the checkpoint: a load would show
        before = _snapshot(model)
        assert restore_renamed_weights(model, checkpoint) is False, name
        assert _unchanged(model, before), name

    lora = get_peft_model(_fresh(tied), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    lora.save_pretrained(tmp_path / "lora")  # what the Trainer writes for a LoRA checkpoint: the adapter only
    before = _snapshot(lora)
    assert restore_renamed_weights(lora, tmp_path / "lora") is False
    assert _unchanged(lora, before)


def test_a_mixtral_checkpoint_is_loaded_with_its_experts_and_router(tmp_path: Path):
    config = MixtralConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=4, intermediate_size=64, num_local_experts=4, num_experts_per_tok=2,
                           tie_word_embeddings=True)
    saved = _fresh(config)
    saved.save_pretrained(tmp_path / "checkpoint-2")
    torch.manual_seed(2)
    model = MixtralForCausalLM(config)
    assert not _unchanged(model, _snapshot(saved))
    assert restore_renamed_weights(model, tmp_path / "checkpoint-2") is True
    assert _unchanged(model, _snapshot(saved))
