"""A suite's ``dtype``: the model is evaluated in that precision (here bf16 on the CPU) and still answers what it
learned; auto is fp32 on the CPU; a dtype that is not one of the four is refused naming the key."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from weightsmith.errors import UserError
from weightsmith.evals.generate import _load_model_cached, clear_model_cache, load_model
from weightsmith.evals.suite import load_suite


def _suite(root: Path, tiny_chat_model, **extra) -> dict:
    held = [{"prompt": [{"role": "user", "content": q}], "answer": a} for q, a in tiny_chat_model.chats.items()]
    (root / "held.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held))
    docs = [{"text": f"{q}{a}"} for q, a in tiny_chat_model.plain.items()]
    (root / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in docs))
    return {"name": "dtype-kpis", "device": "cpu", "generation": {"max_new_tokens": 24}, **extra, "kpis": {
        "exact": {"path": "held.jsonl", "format": "prompt", "metric": "exact_match"},
        "ppl": {"path": "docs.jsonl", "format": "text", "metric": "perplexity"},
    }}


def _loaded_in(path: str, dtype: str) -> bool:
    """True when the eval left the model loaded in ``dtype`` on the CPU (a cache hit, no new load)."""
    hits = _load_model_cached.cache_info().hits
    model, _ = load_model(path, "cpu", dtype)
    return _load_model_cached.cache_info().hits == hits + 1 and {p.dtype for p in model.parameters()} == {
        getattr(torch, dtype)}


def test_a_bf16_suite_evaluates_the_model_in_bf16_and_it_still_answers(ws, ws_dir, tiny_chat_model):
    from weightsmith.evals.run import run_suite

    clear_model_cache()
    try:
        bf16 = run_suite(ws, load_suite(_suite(ws_dir, tiny_chat_model, dtype="bfloat16"), base_dir=ws_dir),
                         tiny_chat_model.path)
        assert _loaded_in(tiny_chat_model.path, "bfloat16")
        assert not _loaded_in(tiny_chat_model.path, "float32")  # nothing loaded it in fp32
        clear_model_cache()
        fp32 = run_suite(ws, load_suite(_suite(ws_dir, tiny_chat_model), base_dir=ws_dir), tiny_chat_model.path)
        assert _loaded_in(tiny_chat_model.path, "float32")  # auto on the CPU
    finally:
        clear_model_cache()
    values = [{name: kpi["value"] for name, kpi in doc["kpis"].items()} for doc in (bf16, fp32)]
    assert values[0]["exact"] == values[1]["exact"] == 1.0
    # bf16 keeps 8 bits of mantissa: the perplexity moves a little, not a lot.
    assert math.isfinite(values[0]["ppl"]) and abs(values[0]["ppl"] / values[1]["ppl"] - 1) < 0.1


def test_a_suite_dtype_must_be_one_of_the_four(tmp_path, tiny_chat_model):
    assert load_suite(_suite(tmp_path, tiny_chat_model), base_dir=tmp_path).dtype == "auto"
    with pytest.raises(UserError, match=r"^suite: dtype: give one of auto, float32, bfloat16, float16, got 'fp8'\.$"):
        load_suite(_suite(tmp_path, tiny_chat_model, dtype="fp8"), base_dir=tmp_path)
