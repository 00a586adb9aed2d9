"""The local executor (a stage as a child process of the worker), with real processes and no training.

What the worker relied on before the executors were split out of it (19f9e7d ``worker.py``): the stage
leads its own process group, its output is appended to the log, ``env`` goes over the worker's environment,
a stop is SIGTERM to the whole group and SIGKILL after the grace period, a signal's death reads as a
negative exit code, and the stage dies when the thread of the worker that started it dies with the worker
(``concurrency > 1`` starts stages from job threads).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import alive, wait_for

from weightsmith.jobs.executors import LocalExecutor, StageResources, terminate

ONE = StageResources(cpus=1, gpus=0)

# A stage that starts a grandchild (in its group), says both pids, and ignores SIGTERM when told to.
_STAGE = """
import os, signal, subprocess, sys, time
if sys.argv[1] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(f"pids {os.getpid()} {child.pid} {os.getpgid(0)} {os.environ['PYTHONUNBUFFERED']} {os.environ.get('WS_TEST_X')}",
      flush=True)
time.sleep(600)
"""


@pytest.fixture
def start(tmp_path) -> Iterator:
    """``start(mode, **env)`` starts the stage; returns (stage, log, [pid, grandchild pid, pgid, ...]).
    Whatever it started is SIGKILLed at the end, so a regression leaves no process behind."""
    started: list[int] = []

    def _start(mode: str = "plain", **env: str):
        log = tmp_path / "stage.log"
        log.write_text("earlier attempt\n")
        stage = LocalExecutor().start(["-c", _STAGE, mode], env={"PYTHONUNBUFFERED": "1", **env}, log_path=log,
                                      resources=ONE, job_id=1)
        started.append(stage.pid)
        line = wait_for(lambda: next((ln for ln in log.read_text().splitlines() if ln.startswith("pids ")), None),
                        timeout=60, what="the stage to start")
        started.append(int(line.split()[2]))
        return stage, log, line.split()[1:]

    yield _start
    for pid in started:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def test_a_stage_leads_its_group_appends_to_its_log_and_gets_env_over_the_workers(start, monkeypatch):
    monkeypatch.setenv("WS_TEST_X", "worker's")
    stage, log, (pid, child, pgid, unbuffered, x) = start(WS_TEST_X="stage's")
    try:
        assert stage.running() and stage.pid == int(pid) == int(pgid)  # its own group, led by the stage
        assert (unbuffered, x) == ("1", "stage's")
        assert log.read_text().startswith("earlier attempt\n")  # appended, never truncated
    finally:
        stage.stop()
    wait_for(lambda: not alive(int(child)), timeout=10, what="the grandchild to stop with the stage")


def test_stop_is_sigterm_to_the_whole_group(start):
    stage, _log, (_pid, child, *_rest) = start()
    began = time.monotonic()
    stage.stop()
    assert time.monotonic() - began < 5  # SIGTERM sufficed: no grace period waited out
    assert not stage.running() and stage.outcome() == (-signal.SIGTERM, None)
    wait_for(lambda: not alive(int(child)), timeout=10, what="the grandchild to get the group's SIGTERM")


def test_a_stage_that_ignores_sigterm_is_killed_after_the_grace_period(start):
    stage, _log, (_pid, child, *_rest) = start("stubborn")
    began = time.monotonic()
    terminate(stage.proc, grace_s=1.0)
    assert 1.0 <= time.monotonic() - began < 10
    assert not stage.running() and stage.outcome() == (-signal.SIGKILL, None)
    wait_for(lambda: not alive(int(child)), timeout=10, what="the grandchild to get the group's SIGKILL")


def test_a_stage_killed_by_a_signal_ends_with_its_negative_number(start):
    stage, _log, (pid, *_rest) = start()
    os.kill(int(pid), signal.SIGKILL)
    wait_for(lambda: not stage.running(), timeout=30, what="the killed stage to end")
    assert stage.outcome() == (-signal.SIGKILL, None)


# A worker that starts a stage from a job thread (as with concurrency > 1), writes the stage's pid, and waits.
_WORKER = """
import sys, threading, time
from pathlib import Path
from weightsmith.jobs.executors import LocalExecutor, StageResources

def job():
    stage = LocalExecutor().start(["-c", "import time; time.sleep(600)"], env={}, log_path=Path(sys.argv[1]),
                                  resources=StageResources(1, 0), job_id=1)
    Path(sys.argv[2]).write_text(str(stage.pid))
    while stage.running():
        time.sleep(0.1)

threading.Thread(target=job, daemon=True).start()
time.sleep(600)
"""


def test_the_stage_a_job_thread_started_dies_with_the_worker(tmp_path):
    pid_file = tmp_path / "stage.pid"
    worker = subprocess.Popen([sys.executable, "-c", _WORKER, str(tmp_path / "stage.log"), str(pid_file)])
    try:
        stage = wait_for(lambda: pid_file.is_file() and pid_file.read_text() and int(pid_file.read_text()),
                         timeout=60, what="the worker to start a stage")
        assert alive(stage)
        worker.kill()  # no cleanup: the stage must not outlive it
        worker.wait(timeout=30)
        wait_for(lambda: not alive(stage), timeout=30, what="the stage to die with its worker")
    finally:
        worker.kill()
        worker.wait()
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
