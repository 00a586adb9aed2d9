"""A scripted agent that takes a dataset to a promoted model through MCP alone.

It holds nothing but a project token and an MCP connection to ``weightsmith mcp`` (stdio, the
official ``mcp`` client). It uploads the tiny example's data, launches its training stages, polls the
jobs and reads their metric history, runs the KPI suite and the gate as jobs of their own, and promotes
the candidate when the gate passes — the loop an autonomous agent runs, every step audited under the
token's name.

    weightsmith tokens create --name agent --scope read,train,promote    # prints the token once
    WEIGHTSMITH_TOKEN=... python examples/agent/agent.py --workspace DIR

A real agent decides each step with a language model; this one is scripted so it can be tested.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

import yaml

TINY = Path(__file__).resolve().parents[1] / "tiny"
TERMINAL = ("succeeded", "failed", "cancelled")


def say(message: str) -> None:
    print(f"[agent] {message}", flush=True)


async def call(client, tool: str, **arguments):
    """Call a tool; a tool error stops the agent with its sentence."""
    result = await client.call_tool(tool, arguments)
    if result.is_error:
        raise SystemExit(f"[agent] {tool} failed: {result.content[0].text}")
    return result.structured_content


def upload_text(path: Path) -> str:
    """A folder of documents as one JSONL of {"text"} rows; a file as it is."""
    if path.is_dir():
        docs = sorted(p for p in path.iterdir() if p.suffix in (".md", ".txt"))
        return "".join(json.dumps({"text": p.read_text()}) + "\n" for p in docs)
    return path.read_text()


def remote_suite(datasets: dict[str, str]) -> dict:
    """The tiny suite with each KPI reading the uploaded dataset instead of a file beside the suite."""
    suite = yaml.safe_load((TINY / "suite.yaml").read_text())
    by_path = {"data/prompts.jsonl": datasets["prompts"], "data/docs": datasets["docs"]}
    for kpi in suite["kpis"].values():
        kpi["data"] = by_path[kpi.pop("path")]
        kpi.pop("format", None)
    return suite


async def wait(client, job: dict, poll: float = 1.0) -> dict:
    """Poll a job until it has ended; the worker runs it, the agent never blocks in a call."""
    while job["state"] not in TERMINAL:
        await asyncio.sleep(poll)
        job = await call(client, "jobs_show", id=job["id"])
    return job


async def run(client) -> dict:
    pipeline = yaml.safe_load((TINY / "pipeline.yaml").read_text())
    refs = {}
    for name, entry in pipeline.pop("datasets").items():
        added = await call(client, "datasets_add", name=name, format=entry["format"],
                           content=upload_text(TINY / entry["path"]), filename=Path(entry["path"]).name)
        refs[name] = added["ref"]
        say(f"dataset {added['ref']}: {added['rows']} rows")
    # Gate and promote are the agent's own steps below (a remote suite is sent inline, not as a file).
    for stage in ("gate", "promote"):
        pipeline["stages"].pop(stage)
    submitted = await call(client, "pipelines_submit", spec=pipeline, idempotency_key="agent-tiny-1")
    say(f"pipeline {submitted['pipeline']}: jobs {[j['id'] for j in submitted['jobs']]}")

    offsets: dict[int, int] = {}
    while True:
        shown = await call(client, "pipelines_show", id=submitted["pipeline"])
        for job in shown["jobs"]:
            if job["kind"] == "tokenizer":
                continue
            points = await call(client, "jobs_metrics", id=job["id"], offset=offsets.get(job["id"], 0), names=["loss"])
            offsets[job["id"]] = points["next_offset"]
            if points["points"]:
                last = points["points"][-1]
                say(f"{job['stage']}: step {last['step']} loss {last['value']:.3f}")
        if shown["state"] not in ("queued", "running"):
            break
        await asyncio.sleep(1.0)
    if shown["state"] != "succeeded":
        failed = next(j for j in shown["jobs"] if j["state"] != "succeeded")
        raise SystemExit(f"[agent] stage {failed['stage']} {failed['state']}: {failed['error']}")

    candidate = f"{pipeline['model']}@latest"
    version = (await call(client, "models_show", ref=candidate))["ref"]
    suite = remote_suite(refs)
    job = await wait(client, await call(client, "evals_start", suite=suite, model=version))
    if job["state"] != "succeeded":
        raise SystemExit(f"[agent] eval job {job['id']} {job['state']}: {job['error']}")
    evaluated = await call(client, "evals_show", run=job["runs"][-1]["result"]["run"])
    say(f"eval run {evaluated['run']}: " + ", ".join(f"{k}={v['value']:.3g}" for k, v in evaluated["kpis"].items()))
    aliases = (await call(client, "models_aliases", name=pipeline["model"]))["aliases"]
    baseline = f"{pipeline['model']}@champion" if any(a["alias"] == "champion" for a in aliases) else None
    job = await wait(client, await call(client, "gates_start", suite=suite, candidate=version, baseline=baseline))
    verdict = await call(client, "gates_show", gate=job["runs"][-1]["result"]["gate"])
    say(f"gate {verdict['gate']}: {'passed' if verdict['passed'] else 'refused'} against {baseline or 'floors only'}")
    if not verdict["passed"]:
        return {"promoted": None, "gate": verdict["gate"]}
    moved = await call(client, "models_promote", ref=version, alias="champion", reason="the agent's gate passed")
    say(f"{moved['model']}@champion → {moved['version']}")
    return {"promoted": moved["version"], "gate": verdict["gate"], "eval_run": evaluated["run"]}


async def main() -> int:
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", required=True, help="the weightsmith workspace the MCP server opens")
    parser.add_argument("--token", default=os.environ.get("WEIGHTSMITH_TOKEN"), help="project token (default: WEIGHTSMITH_TOKEN)")
    args = parser.parse_args()
    if not args.token:
        parser.error("a project token is needed: --token or WEIGHTSMITH_TOKEN")
    server = StdioServerParameters(
        command=sys.executable, args=["-m", "weightsmith", "--workspace", args.workspace, "mcp"],
        env={**os.environ, "WEIGHTSMITH_TOKEN": args.token},
    )
    async with Client(server) as client:
        outcome = await run(client)
    print(json.dumps(outcome))
    return 0 if outcome["promoted"] else 3


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
