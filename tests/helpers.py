"""Helpers the tests share (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch on one thread inside the block: models this small gain nothing from two, and on a busy two-core
    machine OpenMP's spinning threads wait on each other (the same work took 30 s instead of 0.5 s)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def memorise(model, tokenizer, texts: list[str], steps: int, *, add_special_tokens: bool = False) -> None:
    """Train ``model`` on ``texts`` (one padded batch, AdamW at lr 1e-2, ``steps`` full-batch steps) until it
    knows them by heart; leaves it in eval mode. Raises AssertionError when the final loss is not below 0.1."""
    import torch

    batch = tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=add_special_tokens)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    assert loss.item() < 0.1, f"the tiny model did not learn its texts by heart (loss {loss.item():.3f})"


def query_db(db: Path, sql: str, *args) -> list:
    """Rows of one query on a workspace database (read while a worker writes it)."""
    import sqlite3

    con = sqlite3.connect(db, timeout=30)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def wait_for(predicate, timeout: float = 300, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; return that."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, dead but not yet reaped by its parent, counts as dead; Linux /proc)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


def tiny_pretrain_pipeline(path: Path, name: str, **pretrain) -> Path:
    """Write a tokenizer -> tiny pretrain pipeline on the tiny example's docs (seed 3, CPU) to ``path``."""
    import yaml

    spec = {
        "name": name,
        "model": name,
        "seed": 3,
        "datasets": {"docs": {"path": str(EXAMPLES / "tiny" / "data" / "docs"), "format": "text"}},
        "defaults": {"device": "cpu", "logging_steps": 1},
        "stages": {
            "tokenizer": {"data": "docs", "vocab_size": 320, "min_frequency": 1},
            "pretrain": {"data": "docs", "tokenizer": "tokenizer", "size": "tiny", "seq_len": 32, "batch_size": 4,
                         **pretrain},
        },
    }
    path.write_text(yaml.safe_dump(spec))
    return path


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


_AT_ONCE_CHILD = """
import os, sys, time
from weightsmith.cli import main
import weightsmith.config, weightsmith.data.ingest, weightsmith.jobs.pipeline  # the verbs' imports, before the barrier
ready, go, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.001)
if argv[0] == "--python":  # a service call the CLI cannot make (the worker's, say)
    exec(argv[1])
    sys.exit(0)
sys.exit(main(argv))
"""


def run_at_once(cwd: Path, commands: list[list[str]], timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """Run ``weightsmith`` commands in real processes released together by a barrier.

    Each process imports the CLI, says it is ready and waits for one go signal, so the calls meet
    in the database rather than in Python's start-up. A command ``["--python", CODE]`` runs CODE
    instead of the CLI. Returns the processes in the order of ``commands``.
    """
    import shutil
    import tempfile
    import time

    barrier = Path(tempfile.mkdtemp(prefix="barrier-"))
    go = barrier / "go"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-c", _AT_ONCE_CHILD, str(barrier / f"ready-{i}"), str(go), *argv],
                         cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for i, argv in enumerate(commands)
    ]
    try:
        deadline = time.monotonic() + timeout
        while not all((barrier / f"ready-{i}").exists() for i in range(len(procs))):
            dead = [p for p in procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                why = dead[0].stderr.read()[-2000:] if dead else "timed out"
                raise AssertionError(f"a process did not reach the barrier: {why}")
            time.sleep(0.01)
        go.touch()
        outs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        shutil.rmtree(barrier, ignore_errors=True)
    return [subprocess.CompletedProcess(p.args, p.returncode, out, err) for p, (out, err) in zip(procs, outs)]


def claim_until_empty(root: str, name: str, out) -> None:
    """A spawned worker's loop: claim jobs as ``name`` until none is left, then put the ids on ``out``.

    It lives here, not in a test module, so a spawned child can import it however pytest was started.
    """
    from weightsmith.jobs import queue
    from weightsmith.workspace import Workspace

    ws = Workspace.open(root)
    got = []
    while True:
        job = queue.claim_next(ws, name)
        if job is None:
            break
        got.append(job["id"])
    out.put(got)
