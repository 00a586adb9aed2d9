"""Helpers for the service-layer adapters' tests: a real API server, tokens, an uploadable tiny pipeline."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from helpers import EXAMPLES


@dataclass
class Api:
    url: str
    tokens: dict[str, str]  # name -> secret
    ws_dir: Path

    def client(self, token: str | None = "admin") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[token]}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


def make_token(ws_dir: Path, project: str, name: str, scopes: list[str]) -> str:
    from weightsmith.service import Context, projects
    from weightsmith.workspace import Workspace

    ctx = Context.local(Workspace.open(ws_dir), adapter="python")
    return projects.create_token(ctx, {"project": project, "name": name, "scopes": scopes}).token


def start_server(ws_dir: Path, *args: str) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "weightsmith", "api", "--port", "0", *args], cwd=ws_dir,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise AssertionError(f"the API did not start: {line}{proc.stdout.read()}")
    return proc, line.rsplit(" ", 1)[1].strip()


def docs_jsonl() -> str:
    """The tiny example's documents as a text-format JSONL upload."""
    import json

    docs = sorted((EXAMPLES / "tiny" / "data" / "docs").iterdir())
    return "".join(json.dumps({"text": p.read_text()}) + "\n" for p in docs)


def tiny_spec(name: str = "tiny", max_steps: int = 6) -> dict:
    """tokenizer -> tiny pretrain on an uploaded 'docs' dataset: a pipeline a remote client may send."""
    return {
        "name": name, "model": name, "seed": 3,
        "defaults": {"device": "cpu", "logging_steps": 1},
        "stages": {
            "tokenizer": {"data": "docs", "vocab_size": 320, "min_frequency": 1},
            "pretrain": {"data": "docs", "tokenizer": "tokenizer", "size": "tiny", "seq_len": 32, "batch_size": 4,
                         "max_steps": max_steps},
        },
    }
