"""The durable job queue, in the workspace database.

States: queued → running → succeeded | failed | cancelled. A claim is a compare-and-set
(``UPDATE … WHERE id=? AND state='queued'``), so two workers never run one job, on SQLite or
PostgreSQL alike. A job waits until every job it depends on has succeeded; when one of them
fails or is cancelled, its dependants are cancelled with the reason.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from weightsmith.errors import UserError
from weightsmith.workspace import Workspace
from weightsmith.workspace.models import Job, JobDependency, Run, RunMetric, utcnow

TERMINAL = ("succeeded", "failed", "cancelled")


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

    Returns (job, created).
    """
    with ws.session() as s:
        if idempotency_key:
            existing = s.scalar(select(Job).where(Job.idempotency_key == idempotency_key))
            if existing is not None:
                return job_dict(s, existing), False
        job = Job(
            project_id=ws.project_id,
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


def claim_next(ws: Workspace, worker: str, *, pipeline_id: int | None = None) -> dict[str, Any] | None:
    """Atomically take the oldest queued job whose dependencies have all succeeded."""
    with ws.session() as s:
        query = select(Job).where(Job.state == "queued", Job.project_id == ws.project_id).order_by(Job.id)
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
                .where(Job.id == job_id, Job.state == "queued")
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
                return job_dict(s, s.get(Job, job_id))
    return None


def heartbeat(ws: Workspace, job_id: int, token: str) -> bool:
    """Mark the job alive; return True when someone asked to cancel it."""
    with ws.session() as s:
        s.execute(update(Job).where(Job.id == job_id, Job.claim_token == token).values(heartbeat_at=utcnow()))
        job = s.get(Job, job_id)
        return bool(job.cancel_requested) or job.claim_token != token


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
    """Re-queue running jobs whose worker stopped heart-beating (it crashed or was killed)."""
    cutoff = utcnow() - timedelta(seconds=timeout_s)
    with ws.session() as s:
        stale = s.scalars(select(Job).where(Job.state == "running", Job.heartbeat_at < cutoff)).all()
        for job in stale:
            job.state = "queued"
            job.claim_token = None
            job.worker = None
            job.error = f"worker stopped heart-beating; re-queued at {utcnow().isoformat(timespec='seconds')}Z"
            for run in s.scalars(select(Run).where(Run.job_id == job.id, Run.status == "running")):
                run.status = "failed"
                run.finished_at = utcnow()
        return [job.id for job in stale]


def _get(s, job_id: int) -> Job:
    job = s.get(Job, job_id)
    if job is None:
        raise UserError(f"no job {job_id}; 'weightsmith jobs list' shows them.")
    return job


def cancel_job(ws: Workspace, job_id: int) -> dict[str, Any]:
    """Cancel a queued job at once; ask the worker to stop a running one."""
    with ws.session() as s:
        job = _get(s, job_id)
        if job.state in TERMINAL:
            raise UserError(f"job {job_id} already {job.state}; nothing to cancel.")
        if job.state == "queued":
            job.state = "cancelled"
            job.error = "cancelled by user"
            job.finished_at = utcnow()
            _cancel_dependants(s, job, f"upstream stage '{job.stage}' (job {job.id}) cancelled")
        else:
            job.cancel_requested = True
        return job_dict(s, job)


def retry_job(ws: Workspace, job_id: int) -> dict[str, Any]:
    """Re-queue a failed or cancelled job, and the dependants it took down with it.

    Its work folder (checkpoints) is kept, so a training stage resumes where it stopped.
    """
    with ws.session() as s:
        job = _get(s, job_id)
        if job.state not in ("failed", "cancelled"):
            raise UserError(f"job {job_id} is {job.state}; only failed or cancelled jobs can be retried.")

        def requeue(node: Job) -> None:
            node.state = "queued"
            node.error = None
            node.cancel_requested = False
            node.finished_at = None
            for child in _dependants(s, node.id):
                if child.state == "cancelled" and (child.error or "").startswith("upstream"):
                    requeue(child)

        requeue(job)
        return job_dict(s, job)


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
        return job_dict(s, _get(s, job_id), detail=True)


def job_metrics(ws: Workspace, job_id: int) -> list[dict[str, Any]]:
    """Every metric row of the job's runs, as {"run", "step", "name", "value"}."""
    with ws.session() as s:
        _get(s, job_id)
        rows = s.execute(
            select(RunMetric.run_id, RunMetric.step, RunMetric.name, RunMetric.value)
            .join(Run, Run.id == RunMetric.run_id)
            .where(Run.job_id == job_id)
            .order_by(RunMetric.run_id, RunMetric.step, RunMetric.id)
        ).all()
        return [{"run": r, "step": st, "name": n, "value": v} for r, st, n, v in rows]


def job_log_paths(ws: Workspace, job_id: int) -> list[str]:
    with ws.session() as s:
        _get(s, job_id)
        return [r.log_path for r in s.scalars(select(Run).where(Run.job_id == job_id).order_by(Run.id))]
