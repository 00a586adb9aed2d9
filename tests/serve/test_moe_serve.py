"""Serving a mixture-of-experts model (``tiny-moe``: a Mixtral routing each token to 2 of 4 experts).

The model is trained for a few seconds until it answers the serving tests' chats by heart
(``serving_helpers.train_tiny_chat_model``), so its greedy answers are known: the continuous-batching
engine (the model's forward over a left-padded KV cache whose rows join and leave) must give each
prompt the answer ``generate()`` gives it alone, and ``weightsmith serve`` must answer with it over HTTP.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from serving_helpers import PLAIN, V1_CHATS, running, train_tiny_chat_model
from weightsmith.serve.engine import load_engine
from weightsmith.serve.types import SamplingParams

GREEDY = SamplingParams(max_tokens=24, temperature=0)


@pytest.fixture(scope="module")
def moe_dir(tmp_path_factory) -> Iterator[Path]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the engines take the thread count of the thread that builds them
    try:
        yield train_tiny_chat_model(tmp_path_factory.mktemp("moe_serve"), V1_CHATS, size="tiny-moe")
    finally:
        torch.set_num_threads(threads)


def _prompts(engine) -> list[list[int]]:
    chats = [engine.tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                                  tokenize=True, return_dict=True)["input_ids"] for q in V1_CHATS]
    plain = [engine.tokenizer(t)["input_ids"] for t in [*PLAIN, "one two", "the cat sat"]]
    return [list(p) for p in chats + plain]


def _answers(engine, together: bool) -> list[list[int]]:
    prompts = _prompts(engine)
    if together:
        handles = [engine.submit(p, GREEDY) for p in prompts]
        return [h.result().choices[0].token_ids for h in handles]
    return [engine.submit(p, GREEDY).result().choices[0].token_ids for p in prompts]


def test_the_batched_engine_serves_the_moe_answers_generate_gives(moe_dir: Path):
    naive, batched = load_engine(moe_dir, "naive", device="cpu"), load_engine(moe_dir, "batched", device="cpu")
    try:
        assert type(batched.model).__name__ == "MixtralForCausalLM"
        expected = _answers(naive, together=False)  # generate(), one prompt at a time
        alone, together = _answers(batched, together=False), _answers(batched, together=True)
        assert together == alone == expected
        texts = [batched.tokenizer.decode(ids, skip_special_tokens=True) for ids in expected[: len(V1_CHATS)]]
        assert texts == list(V1_CHATS.values())  # learned by heart
    finally:
        naive.close()
        batched.close()


def test_a_moe_saved_with_router_logits_on_serves_the_same(moe_dir: Path, tmp_path: Path):
    """A Mixtral folder whose config says ``output_router_logits: true`` (as some trainers save it): the router
    loss is a training signal, and computed over a KV cache its attention mask no longer fits the new tokens."""
    copy = Path(shutil.copytree(moe_dir, tmp_path / "router_logits_on"))
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "output_router_logits": True}))
    reference, engine = load_engine(moe_dir, "batched", device="cpu"), load_engine(copy, "batched", device="cpu")
    try:
        assert _answers(engine, together=True) == _answers(reference, together=True)
    finally:
        reference.close()
        engine.close()


def test_weightsmith_serve_answers_from_a_moe_version(moe_dir: Path, tmp_path: Path):
    from openai import OpenAI

    from weightsmith.workspace import Workspace
    from weightsmith.workspace.registry import register_version

    ws_dir = tmp_path / "ws"
    Workspace.init(ws_dir)
    register_version(Workspace.open(ws_dir, project="acme"), "moe", moe_dir, stage="sft")
    with running(ws_dir, "moe@v1", "--api-key", "moe-test-key-0123") as (_, url):
        client = OpenAI(base_url=f"{url}/v1", api_key="moe-test-key-0123", max_retries=0, timeout=60)
        for question, answer in V1_CHATS.items():
            response = client.chat.completions.create(model="moe@v1", messages=[{"role": "user", "content": question}],
                                                      temperature=0, max_tokens=24)
            assert response.model == "moe@v1"
            assert (response.choices[0].message.content, response.choices[0].finish_reason) == (answer, "stop")
