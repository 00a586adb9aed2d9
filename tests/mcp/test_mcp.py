"""The official MCP client against ``weightsmith mcp``: over stdio and over streamable HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest

from helpers import query_db
from service_helpers import docs_jsonl, make_token, tiny_spec


def _error(call) -> str:
    """A tool error's text without the SDK's 'Error executing tool NAME: ' prefix."""
    assert call.is_error
    return call.content[0].text.split(": ", 1)[1]


def _result(call) -> dict:
    assert not call.is_error, call.content[0].text
    return call.structured_content


async def _drive(client, ws_dir, worker_env) -> dict:
    """List tools, add a dataset, launch a tiny job, poll it to succeeded and read its metrics."""
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert {"datasets_add", "pipelines_submit", "jobs_show", "jobs_logs", "jobs_metrics", "models_promote"} <= set(tools)
    assert "asynchronous" in tools["pipelines_submit"].description and "jobs_show" in tools["pipelines_submit"].description
    assert tools["datasets_add"].input_schema["required"] == ["name", "format"]

    bad = await client.call_tool("datasets_add", {"name": "docs", "format": "chat", "content": "{nope\n"})
    assert _error(bad).startswith("bad_request:") and "\nupload.jsonl:1: invalid JSON" in _error(bad)
    added = _result(await client.call_tool("datasets_add", {"name": "docs", "format": "text", "content": docs_jsonl()}))
    assert added["ref"] == "docs@v1"
    submitted = _result(await client.call_tool("pipelines_submit", {"spec": tiny_spec(max_steps=8)}))
    job = submitted["jobs"][-1]["id"]
    worker = subprocess.Popen([sys.executable, "-m", "weightsmith", "worker", "--until-idle", "--project", "acme", "--poll", "0.2"],
                              cwd=ws_dir, env=worker_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while True:
            shown = _result(await client.call_tool("jobs_show", {"id": job}))
            if shown["state"] in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    finally:
        worker.wait(timeout=240)
    assert shown["state"] == "succeeded", shown["error"]
    metrics = _result(await client.call_tool("jobs_metrics", {"id": job, "names": ["loss"]}))
    logs = _result(await client.call_tool("jobs_logs", {"id": job}))
    assert len(metrics["points"]) >= 4 and logs["done"] is True and logs["text"]
    missing = await client.call_tool("jobs_show", {"id": 999})
    assert _error(missing).startswith("not_found: no job 999")
    return submitted


def test_stdio_agent_adds_data_trains_and_reads_metrics(ws_dir):
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    token = make_token(ws_dir, "acme", "agent", ["read", "train"])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WEIGHTSMITH_TOKEN": token}
    params = StdioServerParameters(command=sys.executable, args=["-m", "weightsmith", "mcp"], env=env, cwd=str(ws_dir))

    async def main():
        async with Client(params) as client:
            submitted = await _drive(client, ws_dir, env)
            refused = await client.call_tool("models_promote", {"ref": "tiny@v2", "alias": "champion", "force": True,
                                                                "reason": "agent"})
            assert _error(refused).startswith("forbidden: 'models.promote' needs the 'promote' scope")
            return submitted

    asyncio.run(main())
    audit = query_db(ws_dir / ".weightsmith" / "weightsmith.db", "SELECT actor, adapter, verb, outcome FROM audit_log ORDER BY id")
    assert ("agent", "mcp", "pipelines.submit", "ok") in audit and ("agent", "mcp", "models.promote", "forbidden") in audit


def test_stdio_refuses_to_start_without_a_valid_token(ws_dir):
    proc = subprocess.run([sys.executable, "-m", "weightsmith", "mcp", "--token", "wsk_wrong"], cwd=ws_dir,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and "bearer token is not valid" in proc.stderr


@pytest.fixture
def mcp_http(ws_dir):
    env_token = make_token(ws_dir, "acme", "agent", ["read", "train"])
    proc, url = _start_mcp(ws_dir)
    try:
        yield url, env_token
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _start_mcp(ws_dir):
    proc = subprocess.Popen([sys.executable, "-m", "weightsmith", "mcp", "--http", "--port", "0"], cwd=ws_dir,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    line = proc.stdout.readline()
    assert "listening on" in line, line + proc.stdout.read()
    return proc, line.rsplit(" ", 1)[1].strip() + "/mcp"


def test_http_agent_with_a_token_and_origin_checks(ws_dir, mcp_http):
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    url, token = mcp_http
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    async def main():
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
        async with Client(streamable_http_client(url, http_client=http)) as client:
            await _drive(client, ws_dir, env)

    asyncio.run(main())

    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    no_token = httpx2.post(url, json=init, headers=headers)
    assert no_token.status_code == 401
    evil = httpx2.post(url, json=init, headers={**headers, "Authorization": f"Bearer {token}", "Origin": "http://evil.example"})
    assert evil.status_code == 403, evil.text
    rebound = httpx2.post(url, json=init, headers={**headers, "Authorization": f"Bearer {token}", "Host": "evil.example:80"})
    assert rebound.status_code == 421, rebound.text
    assert json.loads(no_token.text)["error"]["type"] == "unauthorized"
