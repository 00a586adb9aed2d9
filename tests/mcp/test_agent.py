"""The shipped agent (examples/agent): a dataset to a promoted model with only an MCP connection and a token."""

from __future__ import annotations

import pytest

import json
import os
import subprocess
import sys

from weightsmith import Client
from weightsmith.errors import NotFound
from helpers import REPO
from service_helpers import make_token, start_server

pytestmark = pytest.mark.slow


def test_the_shipped_agent_takes_data_to_a_promoted_model_and_another_project_sees_none_of_it(ws_dir):
    agent_token = make_token(ws_dir, "acme", "agent", ["read", "train", "promote"])
    admin_token = make_token(ws_dir, "acme", "admin", ["admin"])
    rival_token = make_token(ws_dir, "rival", "rival", ["admin"])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    worker = subprocess.Popen([sys.executable, "-m", "weightsmith", "worker", "--project", "acme", "--poll", "0.2"],
                              cwd=ws_dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        agent = subprocess.run([sys.executable, str(REPO / "examples" / "agent" / "agent.py"), "--workspace", str(ws_dir)],
                               env={**env, "WEIGHTSMITH_TOKEN": agent_token}, capture_output=True, text=True, timeout=600)
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    assert agent.returncode == 0, agent.stdout[-3000:] + agent.stderr[-3000:]
    outcome = json.loads(agent.stdout.strip().splitlines()[-1])
    assert outcome["promoted"] == "dispatch@v5"
    assert "[agent] grpo: step" in agent.stdout  # it read the metric history while the jobs ran

    server, url = start_server(ws_dir)
    try:
        with Client(url, admin_token) as acme, Client(url, rival_token) as rival:
            assert acme.models.show("dispatch@champion").ref == "dispatch@v5"
            trail = [(e.actor, e.adapter, e.verb, e.outcome) for e in acme.audit(limit=500).entries]
            assert ("agent", "mcp", "models.promote", "ok") in trail and ("agent", "mcp", "gates.start", "ok") in trail
            assert rival.models.list().versions == [] and rival.datasets.list().versions == []
            assert rival.jobs.list().jobs == [] and rival.pipelines.list().pipelines == []
            for probe in (lambda: rival.models.show("dispatch@champion"), lambda: rival.jobs.show(1),
                          lambda: rival.evals.show(outcome["eval_run"]), lambda: rival.gates.show(outcome["gate"])):
                try:
                    probe()
                except NotFound:
                    continue
                raise AssertionError("another project's resource was visible")
            assert rival.audit().entries == []
    finally:
        server.terminate()
        server.wait(timeout=20)
