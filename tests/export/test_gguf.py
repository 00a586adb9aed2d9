"""GGUF export round trip: what the file says (metadata, template, stop tokens, lineage), what it holds (tensor
names, shapes, values against the safetensors), and that another reader — transformers' GGUF loader — gets back the
same model and tokenizer. Refusals are one sentence naming the setting."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import one_torch_thread

from weightsmith.errors import UserError
from weightsmith.export.gguf import Lineage, export_gguf

LINEAGE = Lineage(ref="dispatch@v3", name="dispatch", version=3, hash="b" * 64, parent="dispatch@v2",
                  datasets=["chats@v1", "docs@v4"], stage="sft", run=7, created_at="2026-11-01T10:00:00Z")
CONVERSATIONS = [
    [{"role": "user", "content": "hi"}],
    [{"role": "system", "content": "You are the dispatch desk."}, {"role": "user", "content": "Who checks the route?"},
     {"role": "assistant", "content": "The driver."}, {"role": "user", "content": "When?"}],
    [{"role": "user", "content": "Where is truck 7?"},
     {"role": "assistant", "content": "", "tool_calls": [
         {"type": "function", "function": {"name": "locate", "arguments": '{"truck": 7}'}}]},
     {"role": "tool", "content": "north depot"}, {"role": "assistant", "content": "At the north depot."}],
]
TOOLS = [{"type": "function", "function": {
    "name": "locate", "description": "Where a truck is",
    "parameters": {"type": "object", "properties": {"truck": {"type": "integer"}}}}}]


def _fields(reader) -> dict:
    """Every key of a GGUFReader as a Python value (strings decoded, arrays as lists)."""
    return {name: field.contents() for name, field in reader.fields.items()}


def _safetensors(model_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(model_dir / "model.safetensors")


def _unpermute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's Q/K row order back to Hugging Face's, written as transformers' GGUF loader undoes it
    (``LlamaTensorProcessor._reverse_permute_weights``), independently of the exporter's ``permute_qk``."""
    dim = weights.shape[0] // n_head // 2
    return weights.reshape(n_head, dim, 2, *weights.shape[1:]).swapaxes(2, 1).reshape(weights.shape)


def _hf_name(gguf_name: str) -> str:
    import re

    fixed = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}
    if gguf_name in fixed:
        return fixed[gguf_name]
    block, part = re.fullmatch(r"blk\.(\d+)\.(.+)\.weight", gguf_name).groups()
    hf = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", "attn_q": "self_attn.q_proj",
          "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
          "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}[part]
    return f"model.layers.{block}.{hf}.weight"


def _values_by_hf_name(reader, config: dict) -> dict[str, tuple[np.ndarray, str]]:
    """Each GGUF tensor dequantized, in Hugging Face's shape and row order, by its Hugging Face name."""
    from gguf import dequantize

    out = {}
    for t in reader.tensors:
        values = dequantize(t.data, t.tensor_type).reshape([int(n) for n in reversed(t.shape)]).astype(np.float32)
        if t.name.startswith("blk.") and ".attn_q." in t.name:
            values = _unpermute(values, config["num_attention_heads"])
        elif t.name.startswith("blk.") and ".attn_k." in t.name:
            values = _unpermute(values, config["num_key_value_heads"])
        out[_hf_name(t.name)] = (values, t.tensor_type.name)
    return out


def test_f32_round_trip_keeps_metadata_template_lineage_and_every_value(export_models, tmp_path):
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    out = tmp_path / "dispatch.gguf"
    done = export_gguf(export_models.gqa, out, outtype="f32", lineage=LINEAGE)
    config = json.loads((export_models.gqa / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(export_models.gqa)
    reader = GGUFReader(out)
    f = _fields(reader)

    assert f["general.architecture"] == "llama" and f["general.file_type"] == 0  # ALL_F32
    assert f["llama.context_length"] == 256 and done.context_length == 256
    assert (f["llama.block_count"], f["llama.embedding_length"], f["llama.feed_forward_length"]) == (2, 64, 128)
    assert (f["llama.attention.head_count"], f["llama.attention.head_count_kv"]) == (4, 2)
    assert f["llama.rope.dimension_count"] == 16 and f["llama.rope.freq_base"] == pytest.approx(10000.0)
    assert f["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(config["rms_norm_eps"])
    assert f["llama.vocab_size"] == len(tokenizer)
    # The tokenizer: byte-level BPE, named for llama.cpp's pre-tokenizer, with the vocabulary in id order.
    assert (f["tokenizer.ggml.model"], f["tokenizer.ggml.pre"]) == ("gpt2", "gpt-2")
    vocab = tokenizer.get_vocab()
    assert f["tokenizer.ggml.tokens"] == sorted(vocab, key=vocab.get)
    assert len(f["tokenizer.ggml.merges"]) == len(json.loads((export_models.gqa / "tokenizer.json").read_text())
                                                  ["model"]["merges"])
    control = {tok for tok, kind in zip(f["tokenizer.ggml.tokens"], f["tokenizer.ggml.token_type"]) if kind == 3}
    assert control == {"<|pad|>", "<|bos|>", "<|im_end|>", "<|im_start|>"}
    # Stop and special tokens: EOS is <|im_end|>, and it is also the end of a turn; BOS is not added (as in HF).
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert f["tokenizer.ggml.eos_token_id"] == f["tokenizer.ggml.eot_token_id"] == eos == done.eos_token_id
    assert f["tokenizer.ggml.bos_token_id"] == tokenizer.bos_token_id
    assert f["tokenizer.ggml.padding_token_id"] == tokenizer.pad_token_id
    assert f["tokenizer.ggml.add_bos_token"] is False and tokenizer("a")["input_ids"][0] != tokenizer.bos_token_id
    # The chat template, without the training-only {% generation %} markers.
    template = f["tokenizer.chat_template"]
    assert "<|im_start|>" in template and "% generation" not in template and "endgeneration" not in template
    assert done.chat_template
    # Lineage.
    assert f["general.name"] == "dispatch@v3" and f["general.basename"] == "dispatch" and f["general.version"] == "v3"
    assert (f["general.base_model.count"], f["general.base_model.0.name"], f["general.base_model.0.version"]) == (
        1, "dispatch", "v2")
    assert f["general.dataset.count"] == 2
    assert [(f[f"general.dataset.{i}.name"], f[f"general.dataset.{i}.version"]) for i in (0, 1)] == [
        ("chats", "v1"), ("docs", "v4")]
    assert f["weightsmith.ref"] == "dispatch@v3" and f["weightsmith.hash"] == "b" * 64
    assert f["weightsmith.parent"] == "dispatch@v2" and f["weightsmith.datasets"] == ["chats@v1", "docs@v4"]
    assert (f["weightsmith.stage"], f["weightsmith.run"]) == ("sft", 7)
    assert done.metadata["weightsmith.ref"] == "dispatch@v3"

    # Tensors: every safetensors tensor, by llama.cpp's name, exactly (f32), Q and K back in HF's row order.
    hf = _safetensors(export_models.gqa)
    got = _values_by_hf_name(reader, config)
    assert set(got) == set(hf) and done.tensors == len(hf)
    # An untied head is written; a tied one is not (llama.cpp then reuses token_embd), as with the converter.
    assert "output.weight" in {t.name for t in reader.tensors}
    for name, weights in hf.items():
        values, kind = got[name]
        assert kind == "F32" and values.shape == weights.shape, name
        np.testing.assert_array_equal(values, weights, err_msg=name)
    assert done.parameters == sum(w.size for w in hf.values())


def test_f16_and_q8_0_store_the_weights_within_their_rounding(export_models, tmp_path):
    from gguf import GGUFReader

    config = json.loads((export_models.chat / "config.json").read_text())
    hf = _safetensors(export_models.chat)
    assert "lm_head.weight" not in hf  # the tiny size ties its embeddings: no output.weight in the GGUF either
    sizes = {}
    for outtype in ("f16", "q8_0"):
        out = tmp_path / f"chat-{outtype}.gguf"
        sizes[outtype] = export_gguf(export_models.chat, out, outtype=outtype).bytes
        reader = GGUFReader(out)
        assert _fields(reader)["general.file_type"] == {"f16": 1, "q8_0": 7}[outtype]
        got = _values_by_hf_name(reader, config)
        assert set(got) == set(hf)
        for name, weights in hf.items():
            values, kind = got[name]
            if weights.ndim == 1:  # norms stay F32, exactly
                assert kind == "F32"
                np.testing.assert_array_equal(values, weights, err_msg=name)
            elif outtype == "f16":  # exactly the nearest half-precision value
                assert kind == "F16"
                np.testing.assert_array_equal(values, weights.astype(np.float16).astype(np.float32), err_msg=name)
            else:  # Q8_0: blocks of 32 ints times a step max|w|/127 stored as f16: half a step, plus 127 times
                assert kind == "Q8_0"  # the step's own f16 rounding
                blocks = weights.reshape(-1, 32)
                step = np.abs(blocks).max(axis=1, keepdims=True) / 127
                bound = step / 2 + 127 * np.abs(step.astype(np.float16).astype(np.float32) - step) + 1e-7
                assert (np.abs(values.reshape(-1, 32) - blocks) <= bound).all(), name
    assert sizes["q8_0"] < 0.6 * sizes["f16"]


def test_transformers_loads_the_gguf_back_as_the_same_model_and_tokenizer(export_models, tmp_path):
    """An independent reader: transformers' GGUF loader un-permutes Q/K and rebuilds the tokenizer from the file."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts = [*export_models.docs, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "Truck 7?!  3.14"]
    for source in (export_models.gqa, export_models.chat):
        export_gguf(source, tmp_path / f"{source.name}.gguf", outtype="f32")
        with one_torch_thread(), torch.no_grad():
            original = AutoModelForCausalLM.from_pretrained(source).eval()
            loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=f"{source.name}.gguf").eval()
            ours, theirs = AutoTokenizer.from_pretrained(source), AutoTokenizer.from_pretrained(
                tmp_path, gguf_file=f"{source.name}.gguf")
            for text in texts:
                ids = ours(text)["input_ids"]
                assert theirs(text)["input_ids"] == ids, text
                batch = torch.tensor([ids])
                torch.testing.assert_close(loaded(batch).logits, original(batch).logits, rtol=0, atol=1e-5)


def test_the_embedded_template_renders_every_conversation_as_the_tokenizer_does(export_models, tmp_path):
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    export_gguf(export_models.chat, tmp_path / "chat.gguf")
    template = _fields(GGUFReader(tmp_path / "chat.gguf"))["tokenizer.chat_template"]
    tokenizer = AutoTokenizer.from_pretrained(export_models.chat)
    assert "{%- generation %}" in tokenizer.chat_template  # what was taken out: training-only markers
    for messages in CONVERSATIONS:
        for tools in (None, TOOLS):
            for prompt in (False, True):
                kw = {"tools": tools, "add_generation_prompt": prompt, "tokenize": False}
                assert tokenizer.apply_chat_template(messages, chat_template=template, **kw) == \
                    tokenizer.apply_chat_template(messages, **kw)


def test_exports_of_one_folder_are_byte_identical(export_models, tmp_path):
    a = export_gguf(export_models.chat, tmp_path / "a.gguf", outtype="q8_0", lineage=LINEAGE)
    b = export_gguf(export_models.chat, tmp_path / "b.gguf", outtype="q8_0", lineage=LINEAGE)
    assert a.sha256 == b.sha256 and a.bytes == b.bytes


def _copy_model(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target)
    return target


def test_refusals_name_the_setting_and_write_nothing(export_models, tmp_path):
    out = tmp_path / "out.gguf"
    with pytest.raises(UserError, match="outtype 'q4_0' is not one of f32, f16, q8_0"):
        export_gguf(export_models.chat, out, outtype="q4_0")
    with pytest.raises(UserError, match="should end in .gguf"):
        export_gguf(export_models.chat, tmp_path / "out.bin")
    with pytest.raises(UserError, match="output folder .*missing does not exist"):
        export_gguf(export_models.chat, tmp_path / "missing" / "out.gguf")

    mistral = _copy_model(export_models.chat, tmp_path / "mistral")
    config = json.loads((mistral / "config.json").read_text())
    (mistral / "config.json").write_text(json.dumps({**config, "model_type": "mistral"}))
    with pytest.raises(UserError, match="model_type is 'mistral'; GGUF export supports Llama"):
        export_gguf(mistral, out)

    # A pre-tokenizer that adds a prefix space splits " the" where llama.cpp's gpt-2 splits "the": refused.
    spaced = _copy_model(export_models.chat, tmp_path / "spaced")
    spec = json.loads((spaced / "tokenizer.json").read_text())
    spec["pre_tokenizer"]["add_prefix_space"] = True
    (spaced / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(UserError, match=r"tokenizer.json: pre_tokenizer is .*add_prefix_space false.*'gpt-2'"):
        export_gguf(spaced, out)

    nfkc = _copy_model(export_models.chat, tmp_path / "nfkc")
    spec = json.loads((nfkc / "tokenizer.json").read_text())
    spec["normalizer"] = {"type": "NFKC"}
    (nfkc / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(UserError, match='normalizer is "NFKC"; GGUF export needs none'):
        export_gguf(nfkc, out)
    assert not out.exists() and not list(tmp_path.glob(".*partial*"))

    out.write_bytes(b"someone else's file")
    with pytest.raises(UserError, match="already exists; .*--force"):
        export_gguf(export_models.chat, out)
    assert out.read_bytes() == b"someone else's file"
    assert export_gguf(export_models.chat, out, overwrite=True).bytes > 1000
