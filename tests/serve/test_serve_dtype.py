"""``--dtype`` of ``weightsmith serve`` / ``chat`` and the engine loader: the weights are loaded in that dtype and
a bf16 tiny model still answers what it learned; auto is fp32 on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from serving_helpers import running
from weightsmith.errors import UserError


def _version_dir(env, ref: str = "tiny@v1") -> Path:
    from weightsmith.serve.pool import resolve
    from weightsmith.workspace import Workspace

    return Path(resolve(Workspace.open(env.ws_dir, project="acme"), ref).path)


def _answer(engine, question: str) -> str:
    from weightsmith.serve.types import SamplingParams

    ids = engine.tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                               tokenize=True, return_dict=True)["input_ids"]
    result = engine.submit(list(ids), SamplingParams(max_tokens=12, temperature=0.0)).result()
    return result.choices[0].text


@pytest.mark.parametrize("kind", ["batched", "naive"])
def test_the_engine_loads_the_weights_in_the_dtype_asked_and_answers(kind, serve_workspace):
    from weightsmith.cli_serve import engine_loader

    model_dir = _version_dir(serve_workspace)
    engine = engine_loader(kind, device="cpu", dtype="bfloat16", max_batch_size=2)(model_dir)
    try:
        assert {p.dtype for p in engine.model.parameters()} == {torch.bfloat16}
        assert _answer(engine, "hi") == "hello world"
    finally:
        engine.close()
    auto = engine_loader(kind, device="cpu", max_batch_size=2)(model_dir)  # auto: fp32 on the CPU
    try:
        assert {p.dtype for p in auto.model.parameters()} == {torch.float32}
    finally:
        auto.close()
    with pytest.raises(UserError, match=r"dtype is 'half'; use one of auto, float32, bfloat16, float16\."):
        engine_loader(kind, device="cpu", dtype="half")(model_dir)


def test_serve_with_dtype_bfloat16_answers_over_http(serve_workspace):
    from openai import OpenAI

    with running(serve_workspace.ws_dir, "tiny@v1", "--dtype", "bfloat16") as (_, url):
        client = OpenAI(base_url=f"{url}/v1", api_key=serve_workspace.tokens["acme"], max_retries=0, timeout=60)
        reply = client.chat.completions.create(model="tiny@v1", messages=[{"role": "user", "content": "count"}],
                                               max_tokens=16, temperature=0)
    assert reply.choices[0].message.content == "one two three four five six seven eight nine ten"
