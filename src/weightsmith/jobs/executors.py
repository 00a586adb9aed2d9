"""Where a worker's stage process runs: on the worker's own machine (``local``), or on a Ray cluster (``ray``).

The worker does everything else the same way whichever runs the stage: it claims the job, writes the
stage's spec, heart-beats, tails the stage's log and metrics files, stops the stage on a cancel or a
lost claim, reads its result file and records the job's state. An executor only starts the process
(``python -m weightsmith.training.runner SPEC``, or torchrun's launcher), says when it has ended and
how, and stops it.

``ray`` runs each stage process from a Ray task that reserves the stage's CPUs and GPUs on the cluster
(:func:`stage_resources`). The stage reads and writes the workspace by path (its spec, data, model
inputs, work folder, log, metrics and result files), so **the workspace folder must be visible at the
same path to the worker and to every Ray node**: one machine, or a shared filesystem (NFS, Lustre, a
mounted bucket with POSIX semantics). The Ray nodes need weightsmith installed in the Python that runs
their Ray workers. A cancel interrupts the task, which stops the stage the way the local worker does
(SIGTERM to its process group, SIGKILL after a grace period); when the worker itself dies, Ray ends the
tasks it owned and the stage dies with its task (as a local stage dies with its worker).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from weightsmith.proc import die_with_parent

EXECUTORS = ("local", "ray")
RAY_INSTALL_HINT = "pip install 'weightsmith[ray]'"
# Settings of the worker's environment that a stage reads, forwarded to a stage on a Ray node (whose
# environment is its raylet's, not the worker's). Credentials (tokens, database URLs) are never sent.
FORWARDED_ENV = ("WEIGHTSMITH_WORK_LOCK_WAIT_S", "WEIGHTSMITH_DEBUG", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                 "HF_DATASETS_OFFLINE")
STOP_GRACE_S = 10.0  # SIGTERM, then SIGKILL after this many seconds


class StageProcess(Protocol):
    """A started stage process, wherever it runs."""

    pid: int | None  # the process id when it runs on this machine, else None

    def running(self) -> bool:
        """True until the process has ended."""

    def outcome(self) -> tuple[int | None, str | None]:
        """Once ended: (exit code, negative for a signal; None when unknown) and the executor's own failure
        sentence (None unless the executor lost the process, e.g. its Ray node died)."""

    def stop(self) -> None:
        """Stop the process (SIGTERM to its group, SIGKILL after :data:`STOP_GRACE_S`); return once it has ended."""


@dataclass(frozen=True)
class StageResources:
    """What a stage asks a cluster for: CPUs and GPUs (Ray's ``num_cpus``, ``num_gpus``) for all its processes."""

    cpus: int
    gpus: int


def stage_resources(config: dict[str, Any]) -> StageResources:
    """The CPUs and GPUs a stage needs, from its own settings.

    CPUs: its ``threads`` setting, else one per process (``processes``, default 1). GPUs: one per process
    when ``device: cuda``, else none (``device: auto`` asks for no GPU, so on Ray it runs on the CPU: set
    ``device: cuda`` to be placed on a GPU node).
    """
    processes = max(1, int(config.get("processes") or 1))
    cpus = max(int(config.get("threads") or 0), processes)
    gpus = processes if config.get("device") == "cuda" else 0
    return StageResources(cpus=cpus, gpus=gpus)


def start_stage_process(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """Start ``python ARGV`` (this interpreter) appending its output to ``log_path``, in its own process group,
    killed when its parent dies (Linux), with ``env`` over this process's environment."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env},
            preexec_fn=_die_with_parent if os.name == "posix" else None,
        )


def _die_with_parent() -> None:
    # Linux: the stage gets SIGKILL if its parent (the worker, or the Ray task) dies, so no orphan keeps
    # training (the ranks of a multi-process stage do the same with their launcher: runner.main).
    die_with_parent()
    os.setpgrp()


def terminate(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM ``proc``'s process group, SIGKILL it after ``grace_s``; return once ``proc`` has ended."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


# ---------------------------------------------------------------------------------------------
# local: today's behaviour, a child process of the worker
# ---------------------------------------------------------------------------------------------


class LocalExecutor:
    """Runs each stage as a child process of the worker, on the worker's machine."""

    name = "local"
    remote = False

    def start(self, argv: list[str], *, env: dict[str, str], log_path: Path, resources: StageResources,
              job_id: int) -> _LocalStage:
        return _LocalStage(start_stage_process(argv, env, log_path))

    def close(self) -> None:
        pass


class _LocalStage:
    def __init__(self, proc: subprocess.Popen):
        self.proc, self.pid = proc, proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def outcome(self) -> tuple[int | None, str | None]:
        return self.proc.returncode, None

    def stop(self) -> None:
        terminate(self.proc)


# ---------------------------------------------------------------------------------------------
# ray: a Ray task per stage, holding the stage's CPUs and GPUs on the cluster
# ---------------------------------------------------------------------------------------------


def run_stage_in_ray_task(argv: list[str], env: dict[str, str], log_path: str, poll_s: float = 0.2) -> int:
    """The Ray task's body, on a Ray node: run the stage process to its end and return its exit code.

    It polls rather than blocks in ``wait``: Ray delivers a cancel as an exception between Python
    bytecodes, which a blocking ``waitpid`` would not see; on it, the stage is stopped before the task ends.
    """
    with open(log_path, "ab") as log:
        log.write(f"running on Ray node {socket.gethostname()} with {sys.executable}\n".encode())
    proc = start_stage_process(argv, env, Path(log_path))
    try:
        while proc.poll() is None:
            time.sleep(poll_s)
    except BaseException:  # Ray's cancel (KeyboardInterrupt / TaskCancelledError): no stage outlives its task
        terminate(proc)
        raise
    return proc.returncode


class RayExecutor:
    """Runs each stage from a Ray task on the cluster at ``address``, sharing the workspace filesystem.

    Args:
        address: the cluster's GCS address ``HOST:PORT`` (what ``ray start --head`` prints), ``auto``
            (a cluster started on this machine), or a Ray Client address ``ray://HOST:10001``.
        connect_timeout_s: how long to try to reach ``HOST:PORT`` before saying it is unreachable.

    Raises:
        UserError: Ray is not installed (with the pip command), or no cluster answers at ``address``.
    """

    name = "ray"
    remote = True

    def __init__(self, address: str, *, connect_timeout_s: float = 5.0):
        from weightsmith.errors import UserError

        try:
            import ray
        except ImportError:
            raise UserError(f"--executor ray needs Ray, which is not installed here: {RAY_INSTALL_HINT}.") from None
        self.ray, self.address = ray, address
        hostport = address.removeprefix("ray://")
        if address != "auto":
            host, _, port = hostport.rpartition(":")
            if not host or not port.isdigit():
                raise UserError(f"--address {address!r} is not a Ray cluster address: give the head's HOST:PORT "
                                "(as 'ray start --head' prints it), ray://HOST:PORT, or auto.")
            try:
                socket.create_connection((host.strip("[]"), int(port)), timeout=connect_timeout_s).close()
            except OSError as exc:
                raise UserError(f"cannot reach a Ray cluster at {address} ({exc.strerror or exc}): start one with "
                                "'ray start --head' or pass the head's address with --address.") from None
        try:
            ray.init(address=address, namespace="weightsmith", log_to_driver=False, logging_level="WARNING",
                     ignore_reinit_error=True)
        except Exception as exc:  # noqa: BLE001 - ConnectionError, a version mismatch (RuntimeError), ...
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(f"cannot connect to the Ray cluster at {address}: {first}") from None
        self._task = ray.remote(max_retries=0)(run_stage_in_ray_task)

    def start(self, argv: list[str], *, env: dict[str, str], log_path: Path, resources: StageResources,
              job_id: int) -> _RayStage:
        """Submit the stage; it waits in Ray's queue until a node has ``resources`` free."""
        forwarded = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
        ref = self._task.options(num_cpus=resources.cpus, num_gpus=resources.gpus,
                                 name=f"weightsmith-job-{job_id}").remote(argv, {**forwarded, **env}, str(log_path))
        with open(log_path, "a", encoding="utf-8") as log:
            task = ref.task_id().hex() if hasattr(ref, "task_id") else ref.hex()  # a Ray Client ref has no task id
            log.write(f"dispatched to the Ray cluster at {self.address} as task {task} "
                      f"({resources.cpus} CPU, {resources.gpus} GPU)\n")
            if not self._a_node_fits(resources):  # Ray would wait silently, forever on a fixed cluster
                log.write(f"no node of the cluster has {resources.cpus} CPU and {resources.gpus} GPU: the stage waits "
                          f"until one joins (an autoscaler may add it); lower the stage's threads/processes, or "
                          f"'weightsmith jobs cancel {job_id}'\n")
        return _RayStage(self.ray, ref)

    def _a_node_fits(self, resources: StageResources) -> bool:
        """Whether a live node of the cluster has the stage's CPUs and GPUs in all (free or not)."""
        for node in self.ray.nodes():
            total = node.get("Resources") or {}
            if node.get("Alive") and total.get("CPU", 0) >= resources.cpus and total.get("GPU", 0) >= resources.gpus:
                return True
        return False

    def close(self) -> None:
        self.ray.shutdown()


class _RayStage:
    pid = None  # the process runs on a Ray node; its lock file (weightsmith.proc) names its pid and host

    def __init__(self, ray: Any, ref: Any):
        self.ray, self.ref = ray, ref
        self._outcome: tuple[int | None, str | None] | None = None
        self._stopping = False

    def running(self) -> bool:
        if self._outcome is not None:
            return False
        ready, _ = self.ray.wait([self.ref], timeout=0)
        if not ready:
            return True
        try:
            self._outcome = (int(self.ray.get(self.ref)), None)
        except self.ray.exceptions.TaskCancelledError:
            self._outcome = (None, None if self._stopping else "the Ray task running the stage was cancelled "
                             "outside weightsmith (ray job stop, the dashboard)")
        except self.ray.exceptions.RayError as exc:  # the node or its Ray worker died, Ray's OOM killer, ...
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
            self._outcome = (None, f"the Ray task running the stage failed ({type(exc).__name__}): {first}")
        return False

    def outcome(self) -> tuple[int | None, str | None]:
        assert self._outcome is not None, "outcome() before the stage ended"
        return self._outcome

    def stop(self) -> None:
        """Cancel the task: it stops the stage within :data:`STOP_GRACE_S`; a task that does not end is killed
        with its Ray worker (and the stage with it, being its child)."""
        if not self.running():
            return
        self._stopping = True
        self.ray.cancel(self.ref)
        if self.ray.wait([self.ref], timeout=STOP_GRACE_S + 10)[0]:
            self.running()
            return
        self.ray.cancel(self.ref, force=True)
        self.ray.wait([self.ref], timeout=30)
        self.running()
        if self._outcome is None:
            self._outcome = (None, None)


def make_executor(name: str, address: str | None = None) -> LocalExecutor | RayExecutor:
    """The executor a worker runs its stages with: ``local`` (default) or ``ray`` (``address`` required).

    Raises:
        UserError: an unknown name, ``ray`` without an address (or without Ray installed, or unreachable),
            or an address given to ``local``.
    """
    from weightsmith.errors import UserError

    if name == "local":
        if address:
            raise UserError("--address is the Ray cluster's address: use it with --executor ray.")
        return LocalExecutor()
    if name == "ray":
        if not address:
            raise UserError("--executor ray needs the cluster's address: --address HOST:PORT (as 'ray start --head' "
                            "prints it), or --address auto for a cluster on this machine.")
        return RayExecutor(address)
    raise UserError(f"unknown executor {name!r}: use one of {', '.join(EXECUTORS)}.")
