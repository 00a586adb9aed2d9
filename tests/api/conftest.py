"""A real ``weightsmith api`` server on 127.0.0.1 (an ephemeral port), with tokens in two projects."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from service_helpers import Api, make_token, start_server


@pytest.fixture
def api(ws_dir: Path):
    tokens = {
        "admin": make_token(ws_dir, "acme", "admin", ["admin"]),
        "trainer": make_token(ws_dir, "acme", "trainer", ["read", "train"]),
        "reader": make_token(ws_dir, "acme", "reader", ["read"]),
        "rival": make_token(ws_dir, "rival", "rival", ["admin"]),
    }
    proc, url = start_server(ws_dir)
    try:
        yield Api(url=url, tokens=tokens, ws_dir=ws_dir)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
