"""Per-conversation attention for padding-free batches: the same numbers as attending each chat alone."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from weightsmith.training import attention


def _pair(num_kv_heads: int):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=num_kv_heads, intermediate_size=64)
    reference = LlamaForCausalLM(config)
    packed = LlamaForCausalLM(config)
    packed.load_state_dict(reference.state_dict())
    assert attention.use_packed_attention(packed)
    return reference, packed


@pytest.mark.parametrize("num_kv_heads", [4, 2])
def test_a_packed_row_gives_each_conversation_its_own_logits_and_the_same_gradients(num_kv_heads, monkeypatch):
    reference, packed = _pair(num_kv_heads)
    used = []
    segments = attention._segments
    monkeypatch.setattr(attention, "_segments", lambda *a: used.append(segments(*a)) or used[-1])

    lengths = [5, 9, 1, 7]
    ids = torch.randint(0, 100, (1, sum(lengths)))
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    out = packed(input_ids=ids, position_ids=positions, labels=ids)
    assert used and all(u is not None for u in used)  # it took the per-conversation path in every layer

    alone = torch.cat([reference(input_ids=chunk).logits for chunk in ids.split(lengths, dim=1)], dim=1)
    assert torch.allclose(out.logits, alone, atol=1e-5)

    masked_row = reference(input_ids=ids, position_ids=positions, labels=ids)  # transformers' block-diagonal mask
    out.loss.backward()
    masked_row.loss.backward()
    for (name, p), q in zip(packed.named_parameters(), reference.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name


def test_padded_batches_and_generation_are_left_to_sdpa():
    reference, packed = _pair(4)
    prompts = torch.tensor([[1, 2, 3], [0, 4, 5]])
    mask = torch.tensor([[1, 1, 1], [0, 1, 1]])
    kwargs = dict(attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(packed.generate(prompts, **kwargs), reference.generate(prompts, **kwargs))


def test_the_saved_model_loads_anywhere_without_our_attention(tmp_path):
    _, packed = _pair(2)
    packed.save_pretrained(tmp_path)
    assert attention.PACKED_SDPA not in (tmp_path / "config.json").read_text()
    code = ("import sys; from transformers import AutoModelForCausalLM; "
            "m = AutoModelForCausalLM.from_pretrained(sys.argv[1]); print(m.config._attn_implementation)")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "sdpa"
    assert json.loads((tmp_path / "config.json").read_text())["num_key_value_heads"] == 2


def test_a_model_not_on_sdpa_is_left_alone():
    config = LlamaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                         intermediate_size=64, attn_implementation="eager")
    model = LlamaForCausalLM(config)
    assert attention.use_packed_attention(model) is False
    assert model.config._attn_implementation == "eager"
