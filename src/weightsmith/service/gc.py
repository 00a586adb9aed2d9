"""Workspace garbage collection (``workspace.gc``): the disk finished jobs' checkpoints hold, freed.

A training job keeps resumable checkpoints in its work folder (``.weightsmith/jobs/ID/work``:
optimizer state and weights, ~100 MB a job for a small model) so that ``jobs retry`` resumes where
it stopped. Once the job has ended they are intermediate: a succeeded job's model is a registered
version in the artifact store, which this never touches. ``workspace.gc`` deletes, for every job of
the project that has ended (succeeded, failed or cancelled), its work folder's contents and any
unregistered stage output left in its run folders; it keeps each run's log, metrics and
``result.json``. A job that is queued or running is never touched, nor one whose work folder a
stage still holds (its lock, :mod:`weightsmith.proc`): the lock is taken while deleting, so a stage
of a job retried meanwhile waits for it. A failed or cancelled job retried after a collection
trains from the start.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

from pydantic import BaseModel, Field
from sqlalchemy import func, select

from weightsmith.proc import WORK_LOCK
from weightsmith.service.context import Context
from weightsmith.service.verbs import verb
from weightsmith.workspace.models import Job, Model, ModelVersion

ENDED = ("succeeded", "failed", "cancelled")


class CollectGarbage(BaseModel):
    dry_run: bool = Field(False, description="report what would be freed and delete nothing")


class FreedJob(BaseModel):
    job: int
    stage: str
    state: str = Field(description="succeeded | failed | cancelled")
    bytes: int = Field(description="bytes freed (or, in a dry run, that would be)")
    checkpoints: int = Field(description="resumable checkpoints among them")
    path: str | None = Field(None, description="the job's folder (not shown to remote callers)")


class SkippedJob(BaseModel):
    job: int
    stage: str
    reason: str


class GarbageCollected(BaseModel):
    dry_run: bool
    bytes_freed: int = Field(description="bytes freed (in a dry run: that a collection would free)")
    jobs: list[FreedJob] = Field(description="the ended jobs that held intermediate files")
    skipped: list[SkippedJob] = Field([], description="ended jobs left alone, and why (a stage still holds the folder)")
    kept_versions: int = Field(description="registered model versions in the project: their folders are kept")


def _size(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    total = 0
    for root, dirs, files in os.walk(path):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def _intermediate(job_dir: Path) -> list[Path]:
    """What a job that has ended no longer needs: its work folder's contents (checkpoints, a random-init
    start) and stage outputs never moved into the store (a failed run's; a succeeded one's was moved)."""
    found = []
    work = job_dir / "work"
    if work.is_dir():
        found += [p for p in sorted(work.iterdir()) if p.name != WORK_LOCK]
    for run in sorted(job_dir.glob("run-*")):
        found += [p for p in sorted(run.iterdir()) if p.name == "output" or p.name.startswith(".output.partial-")]
    return found


def _try_lock(job_dir: Path) -> int | None:
    """The job's work-folder lock, taken without waiting; None when a stage holds it."""
    work = job_dir / "work"
    if not work.is_dir():
        return -1  # no work folder: nothing a stage could hold
    fd = os.open(work / WORK_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError:  # a filesystem without flock: the job state alone decides
        return fd
    return fd


@verb("workspace.gc", scope="admin", mutating=True,
      target=lambda req, res: f"{'dry run: ' if req.dry_run else ''}{res.bytes_freed} bytes")
def collect_garbage(ctx: Context, req: CollectGarbage) -> GarbageCollected:
    """Free the disk of jobs that have ended: their checkpoints and other intermediate files.

    Keeps every registered model version (the artifact store is not touched) and each run's log,
    metrics and result; never touches a queued or running job. With ``dry_run`` it only reports what
    would be freed. Returns the bytes freed and, per job, what it held. A failed or cancelled job
    retried after a collection trains from the start.
    """
    ws = ctx.workspace
    jobs_root = (ws.dir / "jobs").resolve()
    with ws.session() as s:
        ended = s.execute(select(Job.id, Job.stage, Job.state).where(
            Job.project_id == ws.project_id, Job.state.in_(ENDED)).order_by(Job.id)).all()
        kept = [Path(p).resolve() for p in s.scalars(select(ModelVersion.path))]  # every project's: never deleted
        kept_versions = s.scalar(select(func.count(ModelVersion.id)).join(Model).where(Model.project_id == ws.project_id))
    freed: list[FreedJob] = []
    skipped: list[SkippedJob] = []
    for job_id, stage, state in ended:
        job_dir = jobs_root / str(job_id)
        if not job_dir.is_dir():
            continue
        paths = [p for p in _intermediate(job_dir) if _safe(p, jobs_root, kept)]
        if not paths:
            continue
        lock = None if req.dry_run else _try_lock(job_dir)
        if not req.dry_run and lock is None:
            skipped.append(SkippedJob(job=job_id, stage=stage, reason="a stage still holds its work folder"))
            continue
        try:
            if not req.dry_run and _state(ctx, job_id) not in ENDED:  # retried meanwhile: its checkpoints count
                skipped.append(SkippedJob(job=job_id, stage=stage, reason="it was retried while collecting"))
                continue
            size = sum(_size(p) for p in paths)
            checkpoints = sum(1 for p in paths if p.name == "checkpoints" for _ in p.glob("checkpoint-*"))
            if not req.dry_run:
                for path in paths:
                    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)
        finally:
            if lock is not None and lock >= 0:
                os.close(lock)
        freed.append(FreedJob(job=job_id, stage=stage, state=state, bytes=size, checkpoints=checkpoints,
                              path=str(job_dir)))
    return GarbageCollected(**ctx.public({
        "dry_run": req.dry_run, "bytes_freed": sum(j.bytes for j in freed),
        "jobs": [j.model_dump() for j in freed], "skipped": [j.model_dump() for j in skipped],
        "kept_versions": kept_versions or 0,
    }))


def _state(ctx: Context, job_id: int) -> str:
    with ctx.workspace.session() as s:
        return s.get(Job, job_id).state


def _safe(path: Path, jobs_root: Path, kept: list[Path]) -> bool:
    """Inside the jobs folder, and neither a registered version's folder nor holding or inside one."""
    resolved = path.resolve()
    if jobs_root not in resolved.parents:
        return False
    return not any(resolved == k or k in resolved.parents or resolved in k.parents for k in kept)
