"""Operations: a single-tenant key, a bounded queue (503 + Retry-After), graceful shutdown, the engine pool's
memory limit, a request log that never waits on the database, ``weightsmith chat``, and ``serve``'s bad input."""

from __future__ import annotations

import asyncio
import functools
import signal
import sqlite3
import time

import httpx
import openai
import pytest

from serving_helpers import V1_CHATS, V2_CHATS, cli_main, running, stream_in_background

KEY = "single-tenant-key-0123"


def test_single_tenant_key_bounded_queue_and_graceful_shutdown(serve_workspace):
    from weightsmith.service import traffic

    with running(serve_workspace.ws_dir, "tiny@v1", "--api-key", KEY, "--max-batch-size", "1", "--max-queue", "1") as (
            proc, url):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        answer = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], temperature=0)
        assert (answer.model, answer.choices[0].message.content) == ("tiny@v1", V1_CHATS["hi"])
        for wrong in (serve_workspace.tokens["acme"], "not-the-key"):  # with --api-key, only the key
            with pytest.raises(openai.AuthenticationError):
                openai.OpenAI(base_url=f"{url}/v1", api_key=wrong, max_retries=0).models.list()

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as http:
                body = {"model": "tiny@v1", "prompt": "a", "max_tokens": 200, "temperature": 1.0, "seed": 3}
                return await asyncio.gather(*[http.post("/v1/completions", json=body) for _ in range(12)])

        responses = asyncio.run(burst())
        statuses = sorted(r.status_code for r in responses)
        assert statuses[0] == 200 and statuses[-1] == 503, statuses  # one runs, one waits, the rest are turned away
        busy = next(r for r in responses if r.status_code == 503)
        assert int(busy.headers["Retry-After"]) >= 1 and busy.json()["error"]["code"] == "queue_full"

        # SIGTERM while a stream is in flight: it finishes, then the server exits and the log is flushed.
        lines, reader = stream_in_background(url, KEY, {"model": "tiny@v1", "prompt": "a", "max_tokens": 250,
                                                        "temperature": 1.0, "seed": 1, "stream": True})
        proc.send_signal(signal.SIGTERM)
        reader.join(60)
        assert lines[-1] == "data: [DONE]" and len(lines) > 3
        assert proc.wait(60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down
    request_id = httpx.Response(200, content=lines[0][len("data: "):]).json()["id"]
    row = traffic.show_traffic(serve_workspace.context(), {"request_id": request_id})  # written before the exit
    assert row.token == "api-key" and row.version == "tiny@v1"


def test_the_pool_evicts_the_least_recently_used_version_over_its_memory_limit(serve_workspace):
    from weightsmith.serve.engine import load_engine
    from weightsmith.serve.pool import EnginePool, resolve
    from weightsmith.serve.types import QueueFull, SamplingParams
    from weightsmith.workspace import Workspace

    acme = Workspace.open(serve_workspace.ws_dir, project="acme")
    v1, v2 = resolve(acme, "tiny@v1"), resolve(acme, "tiny@v2")
    secret = resolve(Workspace.open(serve_workspace.ws_dir, project="rival"), "secret@v1")
    pool = EnginePool(functools.partial(load_engine, kind="batched", device="cpu", max_batch_size=4), memory_limit=1)
    try:
        first = pool.lease(v1)
        shared = pool.lease(secret)  # the same weights (same folder): the same engine
        assert shared.engine is first.engine
        second = pool.lease(v2)  # over the limit: v1 is evicted, but finishes what it holds first
        assert [loaded.path for loaded in pool.loaded()] == [v2.path]
        ids = first.engine.tokenizer("<user>hi<eos><assistant>", add_special_tokens=False)["input_ids"]
        held = first.engine.submit(ids, SamplingParams(max_tokens=8, temperature=0))
        assert held.result().choices[0].text == V1_CHATS["hi"]
        first.release()
        shared.release()  # the last hold: now it closes

        deadline = time.monotonic() + 30
        while True:
            try:
                first.engine.submit(ids, SamplingParams(max_tokens=1, temperature=0)).result()
            except QueueFull:
                break
            assert time.monotonic() < deadline, "the evicted engine was never closed"
            time.sleep(0.05)
        again = pool.lease(v1)  # asked for again: loaded again, and v2 goes
        assert again.engine is not first.engine and [loaded.path for loaded in pool.loaded()] == [v1.path]
        second.release()
        again.release()
    finally:
        pool.close()


def test_the_request_log_never_waits_for_the_database(serve_workspace):
    from datetime import datetime

    from weightsmith.serve.log import LoggedRequest, RequestLog
    from weightsmith.service import traffic
    from weightsmith.workspace import Workspace

    ws = Workspace.open(serve_workspace.ws_dir, project="acme")
    log = RequestLog(ws, flush_interval=0.05)
    blocker = sqlite3.connect(ws.dir / "weightsmith.db", timeout=30)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        started = time.perf_counter()
        for i in range(200):
            log.record(LoggedRequest(request_id=f"chatcmpl-locked-{i}", project_id=ws.project_id,
                                     created_at=datetime(2026, 1, 1), token_name="t", endpoint="chat.completions",
                                     model="tiny", model_name="tiny", model_version_id=None, version="tiny@v1",
                                     messages=[{"role": "user", "content": "hi"}], choices=[]))
        recording = time.perf_counter() - started
        assert not log.flush(timeout=0.5)  # it cannot write yet ...
        assert log.pending == 200
    finally:
        blocker.rollback()
        blocker.close()
    assert log.flush(timeout=30)  # ... and writes everything once the lock is free
    log.close()
    assert recording < 0.5, f"recording 200 requests took {recording:.3f} s: it must not touch the database"
    assert traffic.show_traffic(serve_workspace.context(), {"request_id": "chatcmpl-locked-199"}).version == "tiny@v1"


def test_the_request_logs_memory_is_bounded_in_bytes_while_the_database_is_locked(serve_workspace):
    """Found by review: only a row count (100,000) bounded what waits for a locked database, and a row of a long
    context holds megabytes of token ids and text; now the estimated bytes are bounded too."""
    from datetime import datetime

    from weightsmith.serve.log import LoggedRequest, RequestLog
    from weightsmith.workspace import Workspace

    ws = Workspace.open(serve_workspace.ws_dir, project="acme")
    log = RequestLog(ws, flush_interval=0.05, max_pending_bytes=1024**2)
    blocker = sqlite3.connect(ws.dir / "weightsmith.db", timeout=30)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        for i in range(20):  # each row: a 4,000-token prompt and a 4,000-token answer, about half a megabyte
            log.record(LoggedRequest(request_id=f"chatcmpl-big-{i}", project_id=ws.project_id,
                                     created_at=datetime(2026, 1, 1), token_name="t", endpoint="chat.completions",
                                     model="tiny", model_name="tiny", model_version_id=None, version="tiny@v1",
                                     prompt_tokens=4000, completion_tokens=4000, prompt_token_ids=list(range(4000))))
        assert log.pending == 2 and log.dropped == 18 and log.pending_bytes <= 1024**2
    finally:
        blocker.rollback()
        blocker.close()
    assert log.flush(timeout=30) and log.pending_bytes == 0
    log.close()


def test_a_request_abandoned_as_the_server_shuts_down_is_still_logged(serve_workspace):
    """Found by review: a stream whose client went away is logged by a thread of its own once the engine has cut
    it; a shutdown right then closed the request log first, and the row was lost."""
    from weightsmith.serve import completions as gen
    from weightsmith.serve import protocol as p
    from weightsmith.serve.app import Caller, Serving
    from weightsmith.serve.engine import load_engine
    from weightsmith.serve.pool import EnginePool
    from weightsmith.service import traffic
    from weightsmith.service.context import Actor
    from weightsmith.workspace import Workspace

    ws = Workspace.open(serve_workspace.ws_dir, project="acme")
    serving = Serving(ws, EnginePool(functools.partial(load_engine, kind="batched", device="cpu")))
    caller = Caller(Actor(name="shutdown", kind="token", project="acme", scopes=frozenset({"serve"}), remote=True), ws)
    body = p.CompletionRequest(model="tiny@v1", prompt="a", max_tokens=200, temperature=1.0, seed=5, stream=True)
    flight = gen.Flight(serving=serving, caller=caller, endpoint=gen.COMPLETIONS, body=body,
                        request_id=gen.new_request_id(gen.COMPLETIONS))
    gen.prepare(flight)
    gen.submit(flight)
    gen.abandon(flight)  # the client went away ...
    serving.close()  # ... as the server shut down
    row = traffic.show_traffic(serve_workspace.context(), {"request_id": flight.request_id})
    assert row.status == "cancelled" and row.token == "shutdown"


def test_chat_talks_to_a_version_in_the_terminal(serve_workspace, capsys, monkeypatch):
    import io
    import json

    where = ("--workspace", str(serve_workspace.ws_dir), "--project", "acme")
    code, out, err = cli_main(capsys, "chat", "tiny@v2", "--prompt", "hi", "--json", *where)
    assert code == 0, err
    once = json.loads(out)
    assert (once["model"], once["text"], once["finish_reason"]) == ("tiny@v2", V2_CHATS["hi"], "stop")
    monkeypatch.setattr("sys.stdin", io.StringIO("hi\n/reset\npet\n"))
    code, out, err = cli_main(capsys, "chat", "tiny", *where)
    assert code == 0, err
    assert V1_CHATS["hi"] in out and V1_CHATS["pet"] in out
    assert "tiny@v1" in err  # the champion, named as the version it is


def test_serve_refuses_bad_input_in_one_sentence(serve_workspace, capsys):
    where = ("--workspace", str(serve_workspace.ws_dir), "--project", "acme", "--port", "0")
    for args, words in [(("nosuch@v1",), "no model named"), (("tiny@v1", "--memory-limit", "lots"), "is not a size"),
                        (("tiny@v1", "--api-key", "short"), "at least 8 characters"),
                        (("tiny@v1", "--engine", "turbo"), "invalid choice")]:
        code, out, err = cli_main(capsys, "serve", *args, *where)
        assert code == 2 and words in err, err
        assert "Traceback" not in err and "listening" not in out
