"""Parity under llama.cpp itself: the exported GGUF, run by llama-cpp-python, tokenizes, scores and decodes greedily
as the Hugging Face model does on fixed prompts; its chat completion uses the embedded template and stops at EOS.

llama-cpp-python compiles llama.cpp from source when installed (the ``gguf`` extra); where it is not installed
these tests skip, and ``bench/gguf_parity.py`` is the same check by hand.
"""

from __future__ import annotations

import pytest
from export.export_helpers import chat_text
from helpers import one_torch_thread

# Only an absent package skips; one installed but broken fails, as it would for a user.
pytest.importorskip("llama_cpp", exc_type=ModuleNotFoundError,
                    reason="llama-cpp-python is not installed: `pip install -e '.[gguf]'` compiles llama.cpp "
                    "(several minutes); bench/gguf_parity.py runs this check by hand")

# Texts that stress the pre-tokenizer: contractions, digit runs, punctuation runs, whitespace runs, non-ASCII.
TOKENIZER_TEXTS = [
    "I've been told he's there, 'RE you sure? We'Ve a'lL",
    "3 33 333 3333 33333 3.3 3..3 ------======= ''''```````\"\"\"\"......!!!!!!??????",
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n",
    "émigré café ☕ 🚚 нещо на Български 我想在apple工作1314151天～",
]


@pytest.fixture(scope="module")
def prompts(export_models) -> list[str]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(export_models.chat)
    return [chat_text(tokenizer, q) for q in export_models.chats] + [d[:24] for d in export_models.docs]


@pytest.fixture(scope="module")
def exported(export_models, tmp_path_factory) -> dict:
    from weightsmith.export.gguf import export_gguf

    out = tmp_path_factory.mktemp("gguf")
    return {t: export_gguf(export_models.chat, out / f"chat-{t}.gguf", outtype=t).path for t in ("f32", "f16", "q8_0")}


@pytest.mark.parametrize(("outtype", "kv_cache", "tolerance"), [
    ("f32", "f32", 1e-4),  # the same weights, all in f32: only summation order differs
    ("f32", "f16", 2e-2),  # llama.cpp's default f16 KV cache alone moves logits by ~1e-3 relative
    ("f16", "f16", 5e-2),  # f16 weights too
])
def test_llama_cpp_decodes_greedily_as_hf_does(export_models, exported, prompts, outtype, kv_cache, tolerance):
    from weightsmith.export.parity import compare_with_llama_cpp

    with one_torch_thread():
        parity = compare_with_llama_cpp(export_models.chat, exported[outtype], prompts, max_new_tokens=12,
                                        kv_cache=kv_cache)
    print(parity.summary())
    assert parity.tokenization_mismatches == 0
    assert parity.identical_continuations == len(prompts), [(p.hf_greedy, p.llama_greedy) for p in parity.prompts]
    assert parity.max_abs_logit_diff < tolerance


def test_q8_0_keeps_greedy_tokens_and_logprobs_close(export_models, exported, prompts):
    from weightsmith.export.parity import compare_with_llama_cpp

    with one_torch_thread():
        parity = compare_with_llama_cpp(export_models.chat, exported["q8_0"], prompts, max_new_tokens=12)
    print(parity.summary())
    assert parity.tokenization_mismatches == 0
    assert parity.greedy_agreement >= 0.9 and parity.mean_abs_logprob_diff < 0.05


def test_llama_cpp_tokenizes_hard_text_as_the_hf_tokenizer(export_models, exported):
    from llama_cpp import Llama
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(export_models.chat)
    llm = Llama(model_path=str(exported["f16"]), n_ctx=64, vocab_only=True, verbose=False)
    for text in TOKENIZER_TEXTS + export_models.docs:
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == tokenizer(text)["input_ids"], text
        assert llm.detokenize(tokenizer(text)["input_ids"]).decode() == text


def test_gqa_model_scores_as_hf_under_llama_cpp(export_models, tmp_path):
    """4 query heads over 2 key/value heads: the K permutation uses the KV head count."""
    from weightsmith.export.gguf import export_gguf
    from weightsmith.export.parity import compare_with_llama_cpp

    path = export_gguf(export_models.gqa, tmp_path / "gqa.gguf", outtype="f32").path
    with one_torch_thread():
        parity = compare_with_llama_cpp(export_models.gqa, path, export_models.docs, max_new_tokens=4, kv_cache="f32")
    assert parity.tokenization_mismatches == 0 and parity.max_abs_logit_diff < 1e-4


def test_chat_completion_uses_the_embedded_template_and_stops_at_eos(export_models, exported):
    from llama_cpp import Llama

    llm = Llama(model_path=str(exported["f32"]), n_ctx=128, n_threads=1, verbose=False, seed=0)
    assert llm.chat_format == "chat_template.default"  # the Jinja template from the file, not a built-in format
    for question, answer in export_models.chats.items():
        reply = llm.create_chat_completion(messages=[{"role": "user", "content": question}], temperature=0.0,
                                           max_tokens=40)
        assert reply["choices"][0]["message"]["content"] == answer
        assert reply["choices"][0]["finish_reason"] == "stop"  # at <|im_end|>, well before max_tokens
    llm.close()
