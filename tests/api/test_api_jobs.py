"""A tiny job driven only through the REST API: submit, stream its log while it runs, read its metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from helpers import query_db
from service_helpers import docs_jsonl, tiny_spec


def test_logs_stream_while_a_job_runs_and_metrics_read_from_an_offset(api):
    trainer = api.client("trainer")
    r = trainer.post("/v1/datasets", params={"name": "docs", "format": "text"}, content=docs_jsonl().encode(),
                     headers={"Content-Type": "application/x-ndjson"})
    assert r.status_code == 201, r.text
    submitted = trainer.post("/v1/pipelines", json={"spec": tiny_spec(max_steps=40)}).json()
    pretrain = next(j["id"] for j in submitted["jobs"] if j["stage"] == "pretrain")
    db = api.ws_dir / ".weightsmith" / "weightsmith.db"

    worker = subprocess.Popen([sys.executable, "-m", "weightsmith", "worker", "--until-idle", "--project", "acme", "--poll", "0.2"],
                              cwd=api.ws_dir, env={**os.environ, "OMP_NUM_THREADS": "1"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        events, while_running = [], 0
        with trainer.stream("GET", f"/v1/jobs/{pretrain}/logs", params={"stream": "true"}, timeout=300) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            kind = None
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    kind = line[len("event: "):]
                elif line.startswith("data: "):
                    data = json.loads(line[len("data: "):])
                    events.append((kind, data))
                    if kind == "log" and query_db(db, "SELECT state FROM jobs WHERE id = ?", pretrain) == [("running",)]:
                        while_running += 1
        assert worker.wait(timeout=300) == 0
    finally:
        if worker.poll() is None:
            worker.kill()

    kinds = [k for k, _ in events]
    assert kinds[-1] == "end" and events[-1][1]["state"] == "succeeded", events[-3:]
    assert kinds.count("log") >= 2 and while_running >= 1, (kinds.count("log"), while_running)
    streamed = "".join(d["text"] for k, d in events if k == "log")
    whole = trainer.get(f"/v1/jobs/{pretrain}/logs").json()
    assert whole["done"] is True and whole["text"] == streamed and whole["next_offset"] == len(streamed.encode())
    tail = trainer.get(f"/v1/jobs/{pretrain}/logs", params={"offset": whole["next_offset"]}).json()
    assert tail["text"] == "" and tail["done"] is True

    metrics = trainer.get(f"/v1/jobs/{pretrain}/metrics", params={"name": "loss"}).json()
    losses = [p["value"] for p in metrics["points"]]
    assert len(losses) >= 10 and metrics["state"] == "succeeded"
    assert trainer.get(f"/v1/jobs/{pretrain}/metrics", params={"offset": metrics["next_offset"]}).json()["points"] == []
    model = trainer.get("/v1/models/tiny@latest").json()
    assert model["stage"] == "pretrain" and model["data"] == ["docs@v1"] and "path" not in model
