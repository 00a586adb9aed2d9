"""Process plumbing shared by the worker and the stage runner (stdlib only): dying with the parent,
and the lock that keeps one stage at a time in a job's work folder."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path


def die_with_parent() -> None:
    """Linux: ask for SIGKILL when the parent process dies, so no orphan keeps training. Elsewhere a no-op."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


# ---------------------------------------------------------------------------------------------
# The work folder lock: one stage at a time trains in a job's work folder
# ---------------------------------------------------------------------------------------------

WORK_LOCK = ".stage.lock"


def work_lock_wait_s() -> float:
    """How long a stage waits for its work folder while a stage of an earlier attempt holds it:
    ``WEIGHTSMITH_WORK_LOCK_WAIT_S`` seconds, default 60 (a stale stage on this machine is stopped
    within ~15 s by the worker; one on another machine is not, and must end by itself)."""
    try:
        return max(0.0, float(os.environ.get("WEIGHTSMITH_WORK_LOCK_WAIT_S", "60")))
    except ValueError:
        return 60.0


def hold_work_lock(work_dir: Path, wait_s: float) -> int:
    """Take ``work_dir``'s lock (``flock``) for the life of this process; wait up to ``wait_s`` seconds for it.

    The stage process (the runner, or torchrun's launcher) holds it while it trains, so two attempts
    of one job never write the same checkpoints. The file records who holds it (pid, process group,
    host), for :func:`stop_work_lock_holder` and for messages.

    Returns:
        The lock file's descriptor: keep it open; the lock goes when it is closed or the process ends.

    Raises:
        UserError: the lock is still held after ``wait_s``, naming the holder and what to do.
    """
    from weightsmith.errors import UserError

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(work_dir / WORK_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                holder = _describe(work_lock_holder(work_dir))
                raise UserError(
                    f"work folder {work_dir} is still in use by {holder} after {wait_s:g} s: a stage of an earlier "
                    "attempt of this job; stop that process (or let it end), then retry the job."
                ) from None
            time.sleep(0.2)
        except OSError as exc:  # a filesystem without flock (some network mounts): train, but say what is lost
            sys.stderr.write(f"cannot lock {work_dir} ({exc.strerror}); a second attempt of this job would not be "
                             "kept out of it while this one runs\n")
            return fd
    record = {"pid": os.getpid(), "pgid": os.getpgid(0), "host": socket.gethostname(), "since": round(time.time(), 3)}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    return fd


def work_lock_holder(work_dir: Path) -> dict | None:
    """Who holds ``work_dir``'s lock (``{"pid", "pgid", "host", "since"}``, or ``{}`` if unrecorded), or None."""
    try:
        fd = os.open(Path(work_dir) / WORK_LOCK, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # held: its holder wrote who it is right after taking it
            try:
                holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                holder = {}  # caught between the holder's truncate and write
            return holder if isinstance(holder, dict) else {}
        except OSError:  # a filesystem without flock: nobody can hold it
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def stop_work_lock_holder(work_dir: Path, grace_s: float = 10.0) -> str | None:
    """Stop the process holding ``work_dir``'s lock if it runs on this machine; say what was done.

    Only the worker that holds a job's claim calls this, just before it starts the job's stage: a
    holder then is a stage of an earlier attempt whose worker was presumed dead (paused, or cut off),
    which must not train on. It gets SIGTERM (its process group when it leads one, as a stage the
    worker started does), then SIGKILL after ``grace_s``. A holder on another machine cannot be
    signalled: the new stage then waits for it (:func:`hold_work_lock`).

    Returns:
        One line for the stage log, or None when nobody held the lock.
    """
    holder = work_lock_holder(work_dir)
    if holder is None:
        return None
    who = _describe(holder)
    pid, pgid = holder.get("pid"), holder.get("pgid")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int) or pid == os.getpid():
        return f"{who} holds {work_dir} (a stage of an earlier attempt of this job); this stage waits for it to end"
    # Signal the group only when the holder leads its own (a stage the worker started), never ours.
    group = isinstance(pgid, int) and pgid == pid and pgid != os.getpgid(0)
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        current = work_lock_holder(work_dir)
        if current is None:
            break
        if current.get("pid") != pid:  # someone else took it meanwhile: not the process we meant to stop
            return f"{_describe(current)} holds {work_dir}; this stage waits for it to end"
        try:
            if group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        deadline = time.monotonic() + wait_s
        while work_lock_holder(work_dir) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
    if work_lock_holder(work_dir) is not None:
        return f"{who} holds {work_dir} and did not stop on SIGKILL; this stage waits for it to end"
    return f"stopped {who}: a stage of an earlier attempt of this job, still running in {work_dir}"


def _describe(holder: dict | None) -> str:
    if not holder:
        return "another process"
    return f"pid {holder.get('pid')} on {holder.get('host')}"
