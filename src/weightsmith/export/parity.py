"""Does llama.cpp run an exported GGUF as Hugging Face runs the model? Measured on fixed prompts.

Runs the GGUF under llama.cpp through ``llama-cpp-python`` (the ``gguf`` extra: it compiles llama.cpp
from source) and the original folder under ``transformers``, and compares, prompt by prompt:

- tokenization: llama.cpp's ids for the prompt text (special tokens parsed) against the HF tokenizer's;
- logits: llama.cpp's for every prompt position against HF's (max |Δ| over positions and vocabulary),
  and the log-probability each assigns to HF's greedy continuation (mean |Δ| per token);
- greedy decoding: llama.cpp's own greedy sampler (temperature 0) against ``generate(do_sample=False)``,
  up to ``max_new_tokens`` or EOS: the share of positions that agree before the first difference,
  and how many continuations are identical.

Used by ``tests/export/test_llama_cpp_parity.py`` (where llama-cpp-python is installed) and by
``bench/gguf_parity.py`` (the same check by hand, with a table).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class PromptParity:
    prompt: str
    same_tokens: bool  # llama.cpp tokenized the prompt as the HF tokenizer does
    max_abs_logit_diff: float  # over the prompt's positions and the whole vocabulary
    mean_abs_logprob_diff: float  # of HF's greedy tokens, per token
    hf_greedy: list[int]
    llama_greedy: list[int]

    @property
    def agreeing(self) -> int:
        """Leading greedy tokens that agree (after the first difference the two continue from different text)."""
        n = 0
        for a, b in zip(self.hf_greedy, self.llama_greedy):
            if a != b:
                break
            n += 1
        return n


@dataclass
class Parity:
    gguf: str
    kv_cache: str
    prompts: list[PromptParity] = field(default_factory=list)

    @property
    def tokenization_mismatches(self) -> int:
        return sum(not p.same_tokens for p in self.prompts)

    @property
    def identical_continuations(self) -> int:
        return sum(p.hf_greedy == p.llama_greedy for p in self.prompts)

    @property
    def greedy_agreement(self) -> float:
        """Agreeing leading tokens over HF's greedy tokens, all prompts together (1.0: every one agrees)."""
        total = sum(len(p.hf_greedy) for p in self.prompts)
        return sum(p.agreeing for p in self.prompts) / total if total else 1.0

    @property
    def max_abs_logit_diff(self) -> float:
        return max((p.max_abs_logit_diff for p in self.prompts), default=0.0)

    @property
    def mean_abs_logprob_diff(self) -> float:
        return sum(p.mean_abs_logprob_diff for p in self.prompts) / max(len(self.prompts), 1)

    def summary(self) -> dict:
        return {"gguf": self.gguf, "kv_cache": self.kv_cache, "prompts": len(self.prompts),
                "tokenization_mismatches": self.tokenization_mismatches,
                "greedy_agreement": round(self.greedy_agreement, 4),
                "identical_continuations": self.identical_continuations,
                "max_abs_logit_diff": float(f"{self.max_abs_logit_diff:.3g}"),
                "mean_abs_logprob_diff": float(f"{self.mean_abs_logprob_diff:.3g}")}


def compare_with_llama_cpp(model_dir: Path, gguf_path: Path, prompts: list[str], *, max_new_tokens: int = 16,
                           n_threads: int = 1, kv_cache: str = "f16") -> Parity:
    """Run ``prompts`` through the HF model in ``model_dir`` and through llama.cpp on ``gguf_path``; compare.

    Args:
        model_dir: the folder the GGUF was exported from.
        gguf_path: the exported file.
        prompts: texts, special tokens included (e.g. a chat rendered by the template); none empty.
        max_new_tokens: the greedy continuation's length (shorter when HF's stops at EOS).
        n_threads: llama.cpp's threads.
        kv_cache: ``f16`` (llama.cpp's default, what its users get) or ``f32``. An f16 cache alone moves
            logits by ~1e-3 relative (6e-3 on logits up to 17 in the tests' model); with ``f32`` an f32 GGUF
            scores within ~1e-5 of transformers.

    Raises:
        ImportError: llama-cpp-python is not installed (``pip install 'weightsmith[gguf]'``).
    """
    import torch
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if kv_cache not in ("f16", "f32"):
        raise ValueError(f"kv_cache must be f16 or f32, not {kv_cache!r}")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    n_ctx = max(len(tokenizer(p)["input_ids"]) for p in prompts) + max_new_tokens + 8
    cache_type = None if kv_cache == "f16" else 0  # GGML_TYPE_F32; None keeps llama.cpp's default (f16)
    llm = Llama(model_path=str(gguf_path), n_ctx=n_ctx, n_batch=n_ctx, n_threads=n_threads, logits_all=True,
                verbose=False, seed=0, type_k=cache_type, type_v=cache_type)
    result = Parity(gguf=str(gguf_path), kv_cache=kv_cache)
    try:
        for prompt in prompts:
            result.prompts.append(_compare_one(prompt, tokenizer, model, llm, max_new_tokens))
    finally:
        llm.close()
    return result


def _compare_one(prompt: str, tokenizer, model, llm, max_new_tokens: int) -> PromptParity:
    import numpy as np
    import torch

    eos = tokenizer.eos_token_id
    ids = tokenizer(prompt)["input_ids"]
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=eos,
                             pad_token_id=tokenizer.pad_token_id)
        hf_greedy = out[0, len(ids):].tolist()
        hf_logits = model(torch.tensor([ids + hf_greedy])).logits[0].float().numpy()
    # llama.cpp's logits for the same tokens: the prompt, then HF's greedy continuation.
    llm.reset()
    llm.eval(ids + hf_greedy)
    ll_logits = np.array(llm.scores[: len(ids) + len(hf_greedy)], dtype=np.float32)
    positions = np.arange(len(ids) - 1, len(ids) + len(hf_greedy) - 1)  # each predicts the next greedy token
    rows = np.arange(len(hf_greedy))
    hf_logprobs = _log_softmax(hf_logits[positions])[rows, hf_greedy]
    ll_logprobs = _log_softmax(ll_logits[positions])[rows, hf_greedy]
    # llama.cpp's own greedy sampler, from the prompt alone.
    llm.reset()
    llama_greedy: list[int] = []
    for token in llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True):
        llama_greedy.append(int(token))
        if token == eos or len(llama_greedy) >= max_new_tokens:
            break
    return PromptParity(
        prompt=prompt, same_tokens=llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True) == ids,
        max_abs_logit_diff=float(np.abs(ll_logits[: len(ids)] - hf_logits[: len(ids)]).max()),
        mean_abs_logprob_diff=float(np.abs(hf_logprobs - ll_logprobs).mean()) if len(hf_greedy) else 0.0,
        hf_greedy=hf_greedy, llama_greedy=llama_greedy)


def _log_softmax(logits):
    import numpy as np

    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
