"""Shared fixtures: a fresh workspace folder and a way to call the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"

# Tests never reach a hub: everything is built from configs and local files.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class CLI:
    """Runs ``weightsmith`` as a user would: a real subprocess in a workspace folder."""

    def __init__(self, cwd: Path):
        self.cwd = cwd

    def __call__(self, *args: str, check: bool = True, timeout: float = 600, env: dict | None = None):
        proc = subprocess.run(
            [sys.executable, "-m", "weightsmith", *args],
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"weightsmith {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
            )
        return proc

    def json(self, *args: str, **kw):
        proc = self(*args, "--json", **kw)
        return json.loads(proc.stdout)


@pytest.fixture
def ws_dir(tmp_path: Path) -> Path:
    from weightsmith.workspace import Workspace

    Workspace.init(tmp_path)
    return tmp_path


@pytest.fixture
def ws(ws_dir: Path):
    from weightsmith.workspace import Workspace

    return Workspace.open(ws_dir)


@pytest.fixture
def cli(ws_dir: Path) -> CLI:
    return CLI(ws_dir)
