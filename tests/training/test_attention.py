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


@pytest.mark.parametrize(("num_kv_heads", "lengths", "groups"), [
    (4, [5, 9, 1, 7], 1),
    (2, [5, 9, 1, 7], 1),
    (4, [3, 30, 8, 1, 12, 4, 25, 6, 2, 9, 17, 5], 3),  # sorted by length into groups of similar lengths
    (2, [11, 2, 40, 7, 7, 3, 19, 1, 28, 5, 9, 14, 6, 33, 4, 8, 2, 21], 4),
])
def test_a_packed_row_gives_each_conversation_its_own_logits_and_the_same_gradients(
    num_kv_heads, lengths, groups, monkeypatch
):
    reference, packed = _pair(num_kv_heads)
    used = []
    segments = attention._segments
    monkeypatch.setattr(attention, "_segments", lambda *a: used.append(segments(*a)) or used[-1])

    ids = torch.randint(0, 100, (1, sum(lengths)))
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    out = packed(input_ids=ids, position_ids=positions, labels=ids)
    assert used and all(u is not None for u in used)  # it took the per-conversation path in every layer
    gathers, _ = used[0]
    assert len(gathers) == groups and sum(g.shape[0] for g in gathers) == len(lengths)
    # each group is padded to its own longest conversation, not the row's
    assert sum(g.numel() for g in gathers) <= len(lengths) * max(lengths)

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


def test_under_cpu_autocast_attention_runs_in_float32_and_matches_the_masked_row(monkeypatch):
    # CPU flash attention is ~5x slower backwards in bf16 than in fp32: the packed path attends in fp32.
    reference, packed = _pair(2)
    dtypes = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda q, *a, **k: dtypes.append(q.dtype) or sdpa(q, *a, **k))
    lengths = [6, 2, 11, 4, 9, 3, 7, 5]
    ids = torch.randint(0, 100, (1, sum(lengths)))
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = packed(input_ids=ids, position_ids=positions, labels=ids)
        masked_row = reference(input_ids=ids, position_ids=positions, labels=ids)
    assert dtypes and set(dtypes) == {torch.float32}
    assert torch.allclose(out.logits.float(), masked_row.logits.float(), atol=5e-2)
    out.loss.backward()
    masked_row.loss.backward()
    for (name, p), q in zip(packed.named_parameters(), reference.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=2e-2, rtol=5e-2), name
