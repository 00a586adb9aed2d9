"""The server when things go wrong: the engine fails mid-answer, a client leaves before its answer, the server is
told to stop, a version's files are broken; and what serving costs: one indexed query per name, and memory that
counts the KV cache.

The misbehaving models are :mod:`faulty_llama` versions (the tiny Llama of the other serving tests, whose forward
pass sleeps, never ends, or raises at a position), served by a real uvicorn on 127.0.0.1: in a thread of this
process (where the class is registered), or as ``weightsmith serve`` in a process of its own for the shutdown signal.
"""

from __future__ import annotations

import functools
import json
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest

import faulty_llama
from serving_helpers import V1_CHATS, running, stream_in_background

KEY = "robustness-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
STEP = 0.05  # seconds per forward pass of the slow model


@pytest.fixture(scope="module")
def faults(serve_workspace, tmp_path_factory):
    """A workspace (project acme) with good@v1 (the tiny v1), flaky@v1 (fails 5 tokens into an answer), slow@v1 (a
    forward pass takes STEP seconds and never ends a sequence) and shaky@v1 (weights that do not load)."""
    from transformers import AutoTokenizer

    from weightsmith.workspace import Workspace
    from weightsmith.workspace.registry import register_version

    faulty_llama.register()
    v1 = serve_workspace.ws_dir.parent / "v1"
    base = tmp_path_factory.mktemp("faults")
    ws_dir = base / "ws"
    Workspace.init(ws_dir)
    ws = Workspace.open(ws_dir, project="acme")
    tokenizer = AutoTokenizer.from_pretrained(v1)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "count"}], add_generation_prompt=True,
                                           tokenize=False)
    prompt_tokens = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    register_version(ws, "good", v1, stage="sft")
    register_version(ws, "flaky", faulty_llama.faulty_copy(v1, base / "flaky", fail_at_position=prompt_tokens + 4),
                     stage="sft")
    register_version(ws, "slow", faulty_llama.faulty_copy(v1, base / "slow", step_seconds=STEP, no_eos=True),
                     stage="sft")
    broken = base / "shaky"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}')
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    register_version(ws, "shaky", broken, stage="sft")
    return ws


@contextmanager
def serve_here(ws, pool) -> Iterator[tuple[object, str]]:
    """The serving app under a real uvicorn on 127.0.0.1 (any free port), in a thread of this process; yields the
    ``Serving`` and the base URL. Leaving stops uvicorn, which closes the engines and writes the request log."""
    import uvicorn

    from weightsmith.api.server import bind
    from weightsmith.serve.app import Serving, create_serve_app

    serving = Serving(ws, pool, api_key=KEY)
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_serve_app(serving), log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield serving, f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(60)


def _loader(calls: list[Path] | None = None, max_batch_size: int = 4):
    from weightsmith.serve.engine import load_engine

    def load(path: Path):
        if calls is not None:
            calls.append(path)
        return load_engine(path, kind="batched", device="cpu", max_batch_size=max_batch_size, max_queue=16)

    return load


def _rows(ws, serving, model: str, wait_for: int = 1, timeout: float = 15.0) -> list:
    """The request log's rows of ``model`` once there are ``wait_for`` (rows are written in batches, off the path)."""
    from weightsmith.service import Context, traffic

    deadline = time.monotonic() + timeout
    while True:
        serving.request_log.flush(timeout=10)
        rows = traffic.list_traffic(Context.local(ws), {"model": model}).requests
        if len(rows) >= wait_for or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def test_an_engine_failure_mid_stream_sends_an_error_event_and_logs_an_error(faults):
    from weightsmith.serve.pool import EnginePool
    from weightsmith.service import Context, traffic

    count = [{"role": "user", "content": "count"}]
    with serve_here(faults, EnginePool(_loader())) as (serving, url):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=60)
        chunks = []
        with pytest.raises(openai.APIError) as caught:
            for chunk in client.chat.completions.create(model="flaky@v1", messages=count, temperature=0, stream=True):
                chunks.append(chunk)
        assert "flaky@v1 failed while generating" in caught.value.message and "RuntimeError" in caught.value.message
        assert caught.value.body["code"] == "engine_error"
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert streamed and V1_CHATS["count"].startswith(streamed) and streamed != V1_CHATS["count"]  # cut short
        assert all(c.choices[0].finish_reason is None for c in chunks if c.choices)

        # On the wire: the last event is the error object, and no [DONE] claims the stream completed.
        with httpx.stream("POST", f"{url}/v1/completions", headers=AUTH, timeout=60, json={
                "model": "flaky@v1", "prompt": "count", "max_tokens": 40, "temperature": 0, "stream": True}) as response:
            events = [line for line in response.iter_lines() if line]
        assert json.loads(events[-1].removeprefix("data: "))["error"]["type"] == "server_error"
        assert "data: [DONE]" not in events and len(events) > 1

        # Whole answers: a 500 in OpenAI's shape; the server goes on serving.
        with pytest.raises(openai.InternalServerError) as whole:
            client.chat.completions.create(model="flaky@v1", messages=count, temperature=0)
        assert whole.value.body["code"] == "engine_error"
        answer = client.chat.completions.create(model="good@v1", messages=[{"role": "user", "content": "hi"}],
                                                temperature=0)
        assert answer.choices[0].message.content == V1_CHATS["hi"]

        rows = _rows(faults, serving, "flaky", wait_for=3)
        assert len(rows) == 3 and {(r.status, r.finish_reason) for r in rows} == {("error", "error")}
        logged = traffic.show_traffic(Context.local(faults), {"request_id": chunks[0].id})
        assert logged.completion_tokens == 5 and logged.choices[0]["text"] == streamed
        assert logged.choices[0]["finish_reason"] == "error"


def test_a_whole_answer_stops_generating_when_its_client_goes_away(faults):
    from weightsmith.serve.pool import EnginePool, resolve

    pool = EnginePool(_loader())
    pool.lease(resolve(faults, "slow@v1")).release()  # loaded before the clock starts
    with serve_here(faults, pool) as (serving, url):
        body = {"model": "slow@v1", "prompt": "a dog", "max_tokens": 150, "temperature": 0}  # 150 x STEP = 7.5 s
        with httpx.Client(base_url=url, headers=AUTH, timeout=1.0) as http, pytest.raises(httpx.ReadTimeout):
            http.post("/v1/completions", json=body)  # the client gives up after 1 s and closes the connection
        rows = _rows(faults, serving, "slow", timeout=5.0)  # logged once the engine let go of it
        assert [r.status for r in rows] == ["cancelled"] and 0 < rows[0].completion_tokens < 100
        engine = pool.loaded()[0].engine
        assert engine.stats()["running"] == 0.0  # its batch row is free
        quick = httpx.post(f"{url}/v1/completions", headers=AUTH, timeout=30, json={**body, "max_tokens": 3})
        assert quick.status_code == 200 and quick.json()["usage"]["completion_tokens"] == 3


@pytest.mark.slow  # a server process of its own: 20-30 s on a busy two-core machine
def test_sigterm_drains_health_says_so_and_in_flight_streams_finish(faults):
    with running(faults.root, "slow@v1", "--api-key", KEY, prelude=faulty_llama.PRELUDE) as (proc, url):
        assert httpx.get(f"{url}/health").json() == {"status": "ok"}
        lines, reader = stream_in_background(url, KEY, {"model": "slow@v1", "prompt": "a dog", "max_tokens": 60,
                                                        "temperature": 0, "stream": True})  # 60 x STEP = 3 s
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while (health := httpx.get(f"{url}/health")).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (health.status_code, health.json()) == (503, {"status": "draining"})
        refused = httpx.post(f"{url}/v1/completions", headers=AUTH, timeout=30,
                             json={"model": "slow@v1", "prompt": "a dog", "max_tokens": 2})
        assert refused.status_code == 503 and refused.headers["Retry-After"]
        assert "shutting down" in refused.json()["error"]["message"]
        assert not lines or lines[-1] != "data: [DONE]"  # health said draining while the stream was in flight
        reader.join(60)
        assert lines[-1] == "data: [DONE]" and len(lines) > 10
        assert proc.wait(60) in (0, -signal.SIGTERM)


def test_a_version_that_cannot_load_is_refused_for_a_back_off_then_tried_again(faults, serve_workspace):
    from weightsmith.serve.pool import EnginePool, resolve

    calls: list[Path] = []
    pool = EnginePool(_loader(calls), load_retry_seconds=1.5)
    chat = {"model": "shaky@v1", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    shaky = resolve(faults, "shaky@v1")
    with serve_here(faults, pool) as (_serving, url), httpx.Client(base_url=url, headers=AUTH, timeout=60) as http:
        first, second = http.post("/v1/chat/completions", json=chat), http.post("/v1/chat/completions", json=chat)
        for response in (first, second):
            error = response.json()["error"]
            assert response.status_code == 503 and 1 <= int(response.headers["Retry-After"]) <= 2
            assert error["code"] == "model_unavailable" and "shaky@v1 cannot be loaded" in error["message"]
            assert "promote" in error["message"] and "/" not in error["message"]  # what to do; no server folders
        assert calls == [Path(shaky.path)]  # the second request did not read the folder again

        # The operator repairs the folder: picked up once the back-off has passed, not before.
        stored = Path(shaky.path)
        for path in stored.iterdir():
            path.chmod(0o644)
        stored.chmod(0o755)
        shutil.copytree(serve_workspace.ws_dir.parent / "v1", stored, dirs_exist_ok=True)
        assert http.post("/v1/chat/completions", json=chat).status_code == 503 and len(calls) == 1
        time.sleep(1.6)
        answer = http.post("/v1/chat/completions", json=chat)
        assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] == V1_CHATS["hi"]
        assert len(calls) == 2


def test_resolving_a_name_is_one_indexed_query_and_follows_a_promotion(faults, serve_workspace):
    from sqlalchemy import event

    from weightsmith.errors import NotFound
    from weightsmith.serve.pool import resolve
    from weightsmith.workspace.aliases import promote
    from weightsmith.workspace.registry import register_version

    register_version(faults, "good", serve_workspace.ws_dir.parent / "v2", stage="sft")
    promote(faults, "good@v1", "champion", force=True, reason="the first champion", actor="tests")
    statements: list[tuple[str, tuple]] = []

    def record(_conn, _cursor, statement, parameters, _context, _many):
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, tuple(parameters)))

    def resolved_in_one_query(name: str) -> int:
        statements.clear()
        version = resolve(faults, name).version
        assert len(statements) == 1, [s for s, _ in statements]
        with faults.engine.connect() as conn:
            plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statements[0][0]}", statements[0][1]).fetchall()
        assert not [row for row in plan if str(row[-1]).startswith("SCAN")], plan  # every table through an index
        return version

    event.listen(faults.engine, "before_cursor_execute", record)
    try:
        assert [resolved_in_one_query(name) for name in ("good", "good@champion", "good@v1", "good@2", "good@latest")
                ] == [1, 1, 1, 2, 2]
        promote(faults, "good@v2", "champion", force=True, reason="a promotion", actor="tests")
        assert resolved_in_one_query("good") == 2  # the next request follows it
        with pytest.raises(NotFound, match="no champion"):  # the error path may read more, and says why
            resolve(faults, "flaky")
        with pytest.raises(NotFound, match="no alias 'nope'"):
            resolve(faults, "good@nope")
    finally:
        event.remove(faults.engine, "before_cursor_execute", record)


def test_the_pool_counts_each_engines_kv_cache_for_a_full_batch_at_full_context(serve_workspace):
    import torch
    from transformers import DynamicCache

    from weightsmith.serve.engine import load_engine
    from weightsmith.serve.pool import EnginePool, resolve
    from weightsmith.workspace import Workspace

    acme = Workspace.open(serve_workspace.ws_dir, project="acme")
    v1, v2 = resolve(acme, "tiny@v1"), resolve(acme, "tiny@v2")
    engine = load_engine(v1.path, kind="batched", device="cpu", max_batch_size=3)
    try:
        # The estimate is the size of transformers' own cache for 3 rows that fill the context.
        cache = DynamicCache(config=engine.model.config)
        with torch.inference_mode():
            engine.model(input_ids=torch.zeros((3, engine.context_length), dtype=torch.long), cache=cache, use_cache=True)
        real = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
        assert engine.kv_cache_bytes == real > 0
        assert engine.memory_bytes == engine.weight_bytes + engine.kv_cache_bytes
        weights, kv = engine.weight_bytes, engine.kv_cache_bytes
    finally:
        engine.close(drain=False)

    # Two versions' weights fit the limit, weights and caches do not: the least recently used is evicted.
    pool = EnginePool(functools.partial(load_engine, kind="batched", device="cpu", max_batch_size=3),
                      memory_limit=2 * weights + kv)
    try:
        pool.lease(v1).release()
        pool.lease(v2).release()
        assert [sorted(v for _, v in loaded.versions) for loaded in pool.loaded()] == [["tiny@v2"]]
    finally:
        pool.close(drain=False)
