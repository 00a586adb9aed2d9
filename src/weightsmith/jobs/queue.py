"""The durable job queue, in the workspace database.

States: queued → running → succeeded | failed | cancelled. A claim is a compare-and-set
(``UPDATE … WHERE id=? AND state='queued'``), so two workers never run one job, on SQLite or
PostgreSQL alike. A job waits until every job it depends on has succeeded; when one of them
fails or is cancelled, its dependants are cancelled with the reason.

Each claim carries a fresh token: the attempt's fence. A worker heart-beats while it has a job; one
silent for longer than :func:`stale_after_s` is presumed dead (crashed, killed, paused), and its job
is re-queued (or, when someone asked to cancel it, cancelled) by the next worker's reaper, by
``jobs retry`` or by ``jobs cancel``. That clears the token, so the old worker, should it wake,
finds its claim lost (:func:`claim_state`) and writes nothing more for the job.
"""

from __future__ import annotations

import math
import os
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from weightsmith.errors import Conflict, NotFound, UserError
from weightsmith.workspace import Workspace
from weightsmith.workspace.models import Job, Project, JobDependency, Run, RunMetric, utcnow

TERMINAL = ("succeeded", "failed", "cancelled")
DEFAULT_STALE_AFTER_S = 60.0


def stale_after_s(ws: Workspace) -> float:
    """Seconds without a heartbeat after which a running job's worker is presumed dead.

    ``WEIGHTSMITH_STALE_AFTER_S`` when set, else ``stale_after_s`` in ``.weightsmith/workspace.json``,
    else 60. Workers (reaping), ``jobs cancel`` and ``jobs retry`` all read it, so they agree on when
    a worker is gone. A worker heart-beats several times within the window.
    """
    env = os.environ.get("WEIGHTSMITH_STALE_AFTER_S")
    if env:
        source, raw = "WEIGHTSMITH_STALE_AFTER_S", env
    else:
        source, raw = "stale_after_s in .weightsmith/workspace.json", ws.settings.get("stale_after_s")
    if raw is None:
        return DEFAULT_STALE_AFTER_S
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise UserError(f"{source} must be a positive number of seconds, got {str(raw)[:40]!r}.")
    return value


def _heartbeat_age_s(job: Job) -> float:
    return (utcnow() - job.heartbeat_at).total_seconds() if job.heartbeat_at else math.inf


def _cancel_stale(s, job: Job, error: str) -> None:
    """Finalise a running job whose worker is gone as cancelled: nothing of it runs any more."""
    job.state = "cancelled"
    job.error = error
    job.finished_at = utcnow()
    job.claim_token = None
    for run in s.scalars(select(Run).where(Run.job_id == job.id, Run.status == "running")):
        run.status = "cancelled"
        run.finished_at = utcnow()
    _cancel_dependants(s, job, f"upstream stage '{job.stage}' (job {job.id}) cancelled")


def _requeue_stale(s, job: Job) -> None:
    """Put a running job whose worker is gone back in the queue; its claim (token) dies with it."""
    job.state = "queued"
    job.claim_token = None
    job.worker = None
    job.error = f"worker stopped heart-beating; re-queued at {utcnow().isoformat(timespec='seconds')}Z"
    for run in s.scalars(select(Run).where(Run.job_id == job.id, Run.status == "running")):
        run.status = "failed"
        run.finished_at = utcnow()


def submit_job(
    ws: Workspace,
    *,
    kind: str,
    stage: str,
    payload: dict[str, Any],
    depends_on: list[int] = (),
    pipeline_id: int | None = None,
    idempotency_key: str | None = None,
) -> tuple[dict[str, Any], bool]:
    """Queue a job; with an ``idempotency_key`` already used, return that job instead.

    Race-safe: concurrent submissions with one key queue one job and all return it.
    Returns (job, created).
    """
    project_id = ws.project_id
    return ws.transact(lambda s: insert_job(
        s, project_id, kind=kind, stage=stage, payload=payload, depends_on=depends_on,
        pipeline_id=pipeline_id, idempotency_key=idempotency_key,
    ))


def insert_job(
    s,
    project_id: int,
    *,
    kind: str,
    stage: str,
    payload: dict[str, Any],
    depends_on: list[int] = (),
    pipeline_id: int | None = None,
    idempotency_key: str | None = None,
) -> tuple[dict[str, Any], bool]:
    """:func:`submit_job` inside the caller's write transaction (``Workspace.transact``); (job, created)."""
    if idempotency_key:
        existing = s.scalar(select(Job).where(Job.idempotency_key == idempotency_key))
        if existing is not None:
            return job_dict(s, existing), False
    job = Job(
        project_id=project_id,
        pipeline_id=pipeline_id,
        stage=stage,
        kind=kind,
        payload=payload,
        idempotency_key=idempotency_key,
    )
    s.add(job)
    s.flush()
    for dep in depends_on:
        s.add(JobDependency(job_id=job.id, depends_on=dep))
    s.flush()
    return job_dict(s, job), True


def _deps(s, job_id: int) -> list[Job]:
    return list(
        s.scalars(select(Job).join(JobDependency, JobDependency.depends_on == Job.id).where(JobDependency.job_id == job_id))
    )


def _dependants(s, job_id: int) -> list[Job]:
    return list(
        s.scalars(select(Job).join(JobDependency, JobDependency.job_id == Job.id).where(JobDependency.depends_on == job_id))
    )


def _cancel_dependants(s, job: Job, reason: str) -> None:
    for child in _dependants(s, job.id):
        if child.state == "queued":
            child.state = "cancelled"
            child.error = reason
            child.finished_at = utcnow()
            _cancel_dependants(s, child, reason)


def claim_next(ws: Workspace, worker: str, *, pipeline_id: int | None = None,
               any_project: bool = False) -> dict[str, Any] | None:
    """Atomically take the oldest queued job whose dependencies have all succeeded (never one with a cancel request).

    Args:
        any_project: take it from any project (a worker serving the whole workspace); the job's
            ``project`` then says whose it is.
    """
    with ws.session() as s:
        query = select(Job).where(Job.state == "queued", Job.cancel_requested.is_(False)).order_by(Job.id)
        if not any_project:
            query = query.where(Job.project_id == ws.project_id)
        if pipeline_id is not None:
            query = query.where(Job.pipeline_id == pipeline_id)
        candidates = [
            job.id for job in s.scalars(query) if all(dep.state == "succeeded" for dep in _deps(s, job.id))
        ]
    for job_id in candidates:
        token = uuid.uuid4().hex
        now = utcnow()
        with ws.session() as s:
            claimed = s.execute(
                update(Job)
                .where(Job.id == job_id, Job.state == "queued", Job.cancel_requested.is_(False))
                .values(
                    state="running",
                    worker=worker,
                    claim_token=token,
                    heartbeat_at=now,
                    started_at=now,
                    attempts=Job.attempts + 1,
                )
            ).rowcount
            if claimed == 1:
                job = s.get(Job, job_id)
                return {**job_dict(s, job), "project": s.get(Project, job.project_id).name}
    return None


def claim_state(ws: Workspace, job_id: int, token: str, *, beat: bool = False) -> str:
    """Where a worker's claim on a job stands: the fence every attempt checks before it acts.

    Returns "ours", "cancel" (ours, and someone asked to cancel it) or "lost" (the job was re-queued,
    re-claimed or finalised by someone else after this worker was presumed dead: the attempt must stop
    and write nothing more). With ``beat``, also marks the job alive while the claim is ours.
    """
    with ws.session() as s:
        if beat:
            s.execute(update(Job).where(Job.id == job_id, Job.claim_token == token).values(heartbeat_at=utcnow()))
        job = s.get(Job, job_id)
        if job is None or job.claim_token != token or job.state != "running":
            return "lost"
        return "cancel" if job.cancel_requested else "ours"


def heartbeat(ws: Workspace, job_id: int, token: str) -> bool:
    """Mark the job alive; return True when its worker must stop it: a cancel was asked, or the claim was lost."""
    return claim_state(ws, job_id, token, beat=True) != "ours"


def finish_job(ws: Workspace, job_id: int, token: str, state: str, error: str | None = None) -> None:
    assert state in TERMINAL
    with ws.session() as s:
        job = s.get(Job, job_id)
        if job.claim_token != token:  # reclaimed after we were presumed dead: not ours to finish
            return
        job.state = state
        job.error = error
        job.finished_at = utcnow()
        job.claim_token = None
        if state != "succeeded":
            _cancel_dependants(s, job, f"upstream stage '{job.stage}' (job {job.id}) {state}")


def reap_stale(ws: Workspace, timeout_s: float) -> list[int]:
    """Re-queue running jobs whose worker stopped heart-beating (it crashed, was killed or is paused).

    A stale job someone asked to cancel is finalised as cancelled instead: it never runs again.
    Returns the ids of the jobs reaped.
    """
    cutoff = utcnow() - timedelta(seconds=timeout_s)
    stale_now = select(Job).where(Job.state == "running", Job.heartbeat_at < cutoff)
    with ws.session() as s:  # a read first: most calls find nothing and need no write lock
        if s.scalar(stale_now.limit(1)) is None:
            return []
    with ws.write() as s:  # again under the write lock: a heartbeat may have landed in between
        stale = s.scalars(stale_now).all()
        for job in stale:
            if job.cancel_requested:
                _cancel_stale(s, job, "cancelled by user; its worker had stopped heart-beating, so it did not run again")
            else:
                _requeue_stale(s, job)
        return [job.id for job in stale]


def _get(s, job_id: int, project_id: int) -> Job:
    """The job, if it is the project's; another project's job is as absent as one that never was."""
    job = s.get(Job, job_id)
    if job is None or job.project_id != project_id:
        raise NotFound(f"no job {job_id}; 'weightsmith jobs list' shows them.")
    return job


def cancel_job(ws: Workspace, job_id: int) -> dict[str, Any]:
    """Cancel a queued job at once; ask the worker to stop a running one.

    A running job whose worker stopped heart-beating (see :func:`stale_after_s`) is cancelled at once:
    no worker is there to ask, and none will run it again.
    """
    window = stale_after_s(ws)
    with ws.write() as s:
        job = _get(s, job_id, ws.project_id)
        if job.state in TERMINAL:
            raise UserError(f"job {job_id} already {job.state}; nothing to cancel.")
        if job.state == "queued":
            job.state = "cancelled"
            job.error = "cancelled by user"
            job.finished_at = utcnow()
            _cancel_dependants(s, job, f"upstream stage '{job.stage}' (job {job.id}) cancelled")
        elif _heartbeat_age_s(job) > window:
            _cancel_stale(s, job, "cancelled by user; its worker had stopped heart-beating, so nothing was running")
        else:
            job.cancel_requested = True
        return job_dict(s, job)


def retry_job(ws: Workspace, job_id: int) -> dict[str, Any]:
    """Re-queue a failed or cancelled job, and the dependants it took down with it.

    A job still ``running`` whose worker stopped heart-beating (older than :func:`stale_after_s`) is
    re-queued the way a worker's reaper would; one whose worker is alive is refused with what to do.
    Its work folder (checkpoints) is kept, so a training stage resumes where it stopped. Returns the
    job with ``requeued_from``: the state it was in.
    """
    window = stale_after_s(ws)
    with ws.write() as s:
        job = _get(s, job_id, ws.project_id)
        previous = job.state
        if job.state == "running":
            age = _heartbeat_age_s(job)
            if age <= window and job.cancel_requested:
                raise Conflict(
                    f"job {job_id} is running on worker {job.worker}, which was asked to cancel it; retry it once it "
                    f"is cancelled ('weightsmith jobs show {job_id}')."
                )
            if age <= window:
                raise Conflict(
                    f"job {job_id} is running on worker {job.worker} (last heartbeat {age:.0f} s ago); to run it "
                    f"again, stop it with 'weightsmith jobs cancel {job_id}' and then retry it, or, if that worker "
                    f"has died, retry it once its heartbeat is {window:g} s old (in {max(1, math.ceil(window - age))} s)."
                )
            _requeue_stale(s, job)
        elif job.state == "queued":
            raise Conflict(f"job {job_id} is queued already; a worker runs it when its dependencies have succeeded.")
        elif job.state == "succeeded":
            raise Conflict(f"job {job_id} succeeded; nothing to retry (run the pipeline again to train anew).")

        def requeue(node: Job) -> None:
            node.state = "queued"
            node.error = None
            node.cancel_requested = False
            node.finished_at = None
            for child in _dependants(s, node.id):
                if child.state == "cancelled" and (child.error or "").startswith("upstream"):
                    requeue(child)

        requeue(job)
        return {**job_dict(s, job), "requeued_from": previous}


def job_dict(s, job: Job, *, detail: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": job.id,
        "pipeline": job.pipeline_id,
        "stage": job.stage,
        "kind": job.kind,
        "state": job.state,
        "attempts": job.attempts,
        "depends_on": [d.id for d in _deps(s, job.id)],
        "error": job.error,
        "worker": job.worker,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
    }
    if detail:
        out["payload"] = job.payload
        runs = s.scalars(select(Run).where(Run.job_id == job.id).order_by(Run.id)).all()
        out["runs"] = [run_dict(s, r) for r in runs]
    return out


def run_dict(s, run: Run) -> dict[str, Any]:
    metrics = s.scalars(select(RunMetric).where(RunMetric.run_id == run.id).order_by(RunMetric.step, RunMetric.id)).all()
    last: dict[str, float] = {}
    steps = set()
    for m in metrics:
        last[m.name] = m.value
        steps.add(m.step)
    return {
        "id": run.id,
        "status": run.status,
        "exit_code": run.exit_code,
        "pid": run.pid,
        "config": run.config,
        "result": run.result,
        "log": run.log_path,
        "output": run.output_path,
        "metric_steps": len(steps),
        "last_metrics": last,
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
    }


def _iso(value) -> str | None:
    return value.isoformat(timespec="seconds") + "Z" if value else None


def list_jobs(ws: Workspace, *, state: str | None = None, pipeline_id: int | None = None) -> list[dict[str, Any]]:
    with ws.session() as s:
        query = select(Job).where(Job.project_id == ws.project_id).order_by(Job.id)
        if state:
            query = query.where(Job.state == state)
        if pipeline_id is not None:
            query = query.where(Job.pipeline_id == pipeline_id)
        return [job_dict(s, j) for j in s.scalars(query)]


def show_job(ws: Workspace, job_id: int) -> dict[str, Any]:
    with ws.session() as s:
        return job_dict(s, _get(s, job_id, ws.project_id), detail=True)


def job_state(ws: Workspace, job_id: int) -> str:
    """The job's state alone (a log or metrics poll asks it every half second; ``show_job`` loads every run)."""
    with ws.session() as s:
        return _get(s, job_id, ws.project_id).state


def job_metrics(ws: Workspace, job_id: int) -> list[dict[str, Any]]:
    """Every metric row of the job's runs, as {"run", "step", "name", "value"}."""
    with ws.session() as s:
        _get(s, job_id, ws.project_id)
        rows = s.execute(
            select(RunMetric.run_id, RunMetric.step, RunMetric.name, RunMetric.value)
            .join(Run, Run.id == RunMetric.run_id)
            .where(Run.job_id == job_id)
            .order_by(RunMetric.run_id, RunMetric.step, RunMetric.id)
        ).all()
        return [{"run": r, "step": st, "name": n, "value": v} for r, st, n, v in rows]


def job_log_paths(ws: Workspace, job_id: int) -> list[str]:
    with ws.session() as s:
        _get(s, job_id, ws.project_id)
        return [r.log_path for r in s.scalars(select(Run).where(Run.job_id == job_id).order_by(Run.id))]
