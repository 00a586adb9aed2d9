"""Shared fixtures: a fresh workspace folder and a way to call the real CLI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import CLI

# Tests never reach a hub: everything is built from configs and local files.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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
