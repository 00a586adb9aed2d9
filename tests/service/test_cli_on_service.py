"""The CLI is an adapter of the service layer: its mutations are audited, and one worker serves every project."""

from __future__ import annotations

import json

import yaml

from helpers import EXAMPLES


def test_cli_mutations_are_audited_with_their_outcome(cli, tmp_path):
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    good.write_text(json.dumps({"prompt": "Gate code?", "answer": "4471"}) + "\n")
    bad.write_text('{"prompt": ""}\n')
    cli("data", "add", "prompts", str(good), "--format", "prompt")
    assert cli("data", "add", "prompts", str(bad), "--format", "prompt", check=False).returncode == 2
    cli("tokens", "create", "--name", "ci", "--scope", "read")
    cli("data", "list")  # reads are not audited
    entries = cli.json("audit", "list")["entries"]
    assert [(e["verb"], e["outcome"], e["adapter"], e["actor_kind"]) for e in entries] == [
        ("tokens.create", "ok", "cli", "person"),
        ("datasets.add", "bad_request", "cli", "person"),
        ("datasets.add", "ok", "cli", "person"),
    ]
    assert entries[2]["target"] == "prompts@v1" and "problem(s) found" in entries[1]["detail"]
    assert all(len(e["request_digest"]) == 64 for e in entries)
    text = cli("audit", "list").stdout
    assert "datasets.add" in text and "bad_request" in text


def test_tokens_cli_prints_the_secret_once_and_lists_no_secret(cli):
    created = cli.json("tokens", "create", "--name", "agent", "--scope", "read,train", "--token-project", "acme")
    assert created["token"].startswith("wsk_") and created["project"] == "acme" and created["scopes"] == ["read", "train"]
    listed = cli("tokens", "list", "--json").stdout
    assert created["token"] not in listed and created["prefix"] in listed
    refused = cli("tokens", "create", "--name", "x", "--scope", "root", check=False)
    assert refused.returncode == 2 and "a token needs one or more of read, train, promote, serve, admin" in refused.stderr
    revoked = cli.json("tokens", "revoke", str(created["id"]))
    assert revoked["revoked_at"]


def test_one_worker_runs_every_projects_jobs_each_in_its_project(cli, tmp_path):
    spec = {"name": "tok", "model": "tok", "datasets": {"docs": {"path": str(EXAMPLES / "tiny" / "data" / "docs"),
                                                                  "format": "text"}},
            "stages": {"tokenizer": {"data": "docs", "vocab_size": 300, "min_frequency": 1}}}
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(yaml.safe_dump(spec))
    for project in ("north", "south"):
        cli("--project", project, "run", str(pipeline), "--detach")
    assert cli.json("--project", "north", "pipelines", "list")["pipelines"][0]["state"] == "queued"
    ran = cli.json("worker", "--all-projects", "--until-idle", env={"OMP_NUM_THREADS": "1"})
    assert ran["jobs_run"] == 2
    for project in ("north", "south"):
        jobs = cli.json("--project", project, "jobs", "list")
        assert [(j["stage"], j["state"]) for j in jobs] == [("tokenizer", "succeeded")], project
        assert cli.json("--project", project, "pipelines", "show", "1" if project == "north" else "2")["state"] == "succeeded"
    assert cli("--project", "south", "pipelines", "show", "1", check=False).returncode == 2  # north's pipeline: not found
