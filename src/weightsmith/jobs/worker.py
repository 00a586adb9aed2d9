"""The worker: claims jobs, runs each stage as a subprocess, heart-beats, records everything.

A stage runs in its own process (``python -m weightsmith.training.runner SPEC``) so that a
crash, an out-of-memory kill or a SIGKILL takes down the stage and never the worker. The
worker tails the stage's metrics file into the database while it runs, stops it when the job
is cancelled, and on success registers its output (a model version with lineage, or a
tokenizer artifact). Where the stage process runs is the executor's (:mod:`weightsmith.jobs.executors`):
a child of the worker (local, the default), or a Ray task on a cluster that shares the workspace's filesystem.

Two attempts of one job never run at once. A worker presumed dead (no heartbeat within the
window, :func:`weightsmith.jobs.queue.stale_after_s`; e.g. paused) loses its claim when another
worker reaps the job; from then on it stops its stage and writes nothing for the job (the
claim token is the fence, checked before a stage starts and before an output is registered).
The stage itself holds the job's work folder lock (:mod:`weightsmith.proc`) for its life, so
a new attempt's stage cannot train in that folder while the stale one lives: the new attempt's
worker stops a stale stage on its own machine first, and a stale stage elsewhere makes the new
one wait, then fail with a sentence naming it.

A worker may run several jobs at once (``concurrency``), each in a thread that supervises its
stage process. The machine's cores are divided among the stages running on it: each stage gets
``cores // N`` threads, N being the larger of the worker's concurrency and the jobs running on this
host (other workers' included), unless it sets ``threads`` itself — two training processes that
each take every core slow each other down tens of times (OpenMP threads spin waiting on each other).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import select

from weightsmith.config import DATASET_OUTPUT, REGISTRY_KINDS
from weightsmith.data.formats import NO_LIMIT, validate
from weightsmith.data.ingest import store_validated
from weightsmith.errors import describe_unexpected
from weightsmith.jobs.executors import LocalExecutor, RayExecutor, stage_resources
from weightsmith.jobs.queue import claim_next, claim_state, finish_job, reap_stale
from weightsmith.jobs.queue import stale_after_s as default_stale_after_s
from weightsmith.proc import stop_work_lock_holder
from weightsmith.training.common import write_json_atomically
from weightsmith.workspace import Workspace
from weightsmith.workspace.models import Job, Run, RunMetric, utcnow
from weightsmith.workspace.registry import register_version

STAGE_MODULES = {kind: "weightsmith.training.runner" for kind in ("tokenizer", "pretrain", "cpt", "sft", "dpo", "grpo", "pairs")}
MODEL_KINDS = {"pretrain", "cpt", "sft", "dpo", "grpo"}


class StageInputError(Exception):
    """An upstream output the job needs is missing (the upstream's record is broken)."""


class Worker:
    """Runs queued jobs until told to stop.

    Args:
        ws: the workspace.
        poll_s: how often to look for work and to check a running stage.
        stale_after_s: a running job whose heartbeat is older than this is re-queued (or, with a cancel
            request, cancelled); default :func:`weightsmith.jobs.queue.stale_after_s`. The worker
            heart-beats four times within it.
        echo: a stream to copy each stage's log to as it is written (people watching), or None.
        on_event: ``on_event(event, job)`` for "started", "progress" (``job["metrics"]``: one metrics row of
            the stage, ``job["max_steps"]``), and the end: "succeeded", "failed", "cancelled", "superseded".
        all_projects: run every project's jobs (one worker for a workspace that many projects' tokens
            submit to), each with the workspace seen from its project.
        concurrency: how many jobs to run at once (each stage then gets cores // concurrency threads
            unless it sets ``threads``).
        executor: where stage processes run (:mod:`weightsmith.jobs.executors`): this machine (the default,
            a :class:`LocalExecutor`), or a Ray cluster sharing the workspace's filesystem (a :class:`RayExecutor`).
    """

    def __init__(
        self,
        ws: Workspace,
        *,
        name: str | None = None,
        poll_s: float = 0.5,
        stale_after_s: float | None = None,
        echo: TextIO | None = None,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
        all_projects: bool = False,
        concurrency: int = 1,
        executor: LocalExecutor | RayExecutor | None = None,
    ):
        self.ws = ws
        self.executor = executor or LocalExecutor()
        self.all_projects = all_projects
        self.concurrency = max(1, int(concurrency))
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.poll_s = poll_s
        self.stale_after_s = default_stale_after_s(ws) if stale_after_s is None else stale_after_s
        self.echo = echo
        self.on_event = on_event or (lambda _event, _job: None)
        self._stop = False

    def stop(self, *_: object) -> None:
        self._stop = True

    def run(self, *, until_idle: bool = False, pipeline_id: int | None = None, max_jobs: int | None = None) -> int:
        """Loop claiming and running jobs. Returns how many jobs it ran."""
        if self.concurrency > 1:
            return self._run_concurrently(until_idle=until_idle, pipeline_id=pipeline_id, max_jobs=max_jobs)
        done = 0
        while not self._stop and (max_jobs is None or done < max_jobs):
            reap_stale(self.ws, self.stale_after_s)
            job = claim_next(self.ws, self.name, pipeline_id=pipeline_id, any_project=self.all_projects)
            if job is None:
                if until_idle and not self._has_pending(pipeline_id):
                    break
                time.sleep(self.poll_s)
                continue
            self._for_project(job["project"]).execute(job)
            done += 1
        return done

    def _run_concurrently(self, *, until_idle: bool, pipeline_id: int | None, max_jobs: int | None) -> int:
        """:meth:`run` with up to ``concurrency`` jobs at once, each supervised by its own thread."""
        running: list[threading.Thread] = []
        started = 0
        while not self._stop and (max_jobs is None or started < max_jobs):
            running = [t for t in running if t.is_alive()]
            if len(running) >= self.concurrency:
                time.sleep(min(self.poll_s, 0.5))
                continue
            reap_stale(self.ws, self.stale_after_s)
            job = claim_next(self.ws, self.name, pipeline_id=pipeline_id, any_project=self.all_projects)
            if job is None:
                if until_idle and not running and not self._has_pending(pipeline_id):
                    break
                time.sleep(self.poll_s)
                continue
            thread = threading.Thread(target=self._for_project(job["project"]).execute, args=(job,),
                                      name=f"job-{job['id']}", daemon=True)
            thread.start()
            running.append(thread)
            started += 1
        for thread in running:
            thread.join()
        return started

    def _for_project(self, project: str) -> Worker:
        """This worker, seen from the project a claimed job belongs to (its inputs and outputs are that project's)."""
        if project == self.ws.project_name:
            return self
        other = Worker(self.ws.for_project(project), name=self.name, poll_s=self.poll_s,
                       stale_after_s=self.stale_after_s, echo=self.echo, on_event=self.on_event,
                       concurrency=self.concurrency, executor=self.executor)
        other._stop = self._stop
        return other

    def _has_pending(self, pipeline_id: int | None) -> bool:
        with self.ws.session() as s:
            query = select(Job.id).where(Job.state.in_(("queued", "running")))
            if not self.all_projects:
                query = query.where(Job.project_id == self.ws.project_id)
            if pipeline_id is not None:
                query = query.where(Job.pipeline_id == pipeline_id)
            return s.scalar(query.limit(1)) is not None

    # ------------------------------------------------------------------------------
    def execute(self, job: dict[str, Any]) -> str:
        """Run one claimed job to a terminal state; return that state, or "superseded" when the job was
        taken from this worker (presumed dead) while it ran, and so left to the worker that has it now."""
        with self.ws.session() as s:
            token = s.get(Job, job["id"]).claim_token
        beat = _Heartbeat(self.ws, job["id"], token, interval_s=min(1.0, self.stale_after_s / 4))
        try:
            return self._execute(job, token, beat)
        finally:
            beat.stop()

    def _execute(self, job: dict[str, Any], token: str, beat: _Heartbeat) -> str:
        job_id = job["id"]
        with self.ws.session() as s:
            row = s.get(Job, job_id)
            payload = {**row.payload, "pipeline_id": row.pipeline_id, "stage": row.stage}
        self.on_event("started", job)
        # A cancel asked for between the claim and now: nothing starts.
        if (claim := beat.check()) != "ours":
            return self._stop_before_starting(job, token, claim)
        job_dir = self.ws.job_dir(job_id)
        try:
            inputs = self._resolve_inputs(payload)
        except StageInputError as exc:
            finish_job(self.ws, job_id, token, "failed", str(exc))
            self.on_event("failed", {**job, "error": str(exc)})
            return "failed"

        if payload["kind"] in REGISTRY_KINDS:
            return self._execute_in_process(job, token, payload, inputs)

        with self.ws.session() as s:
            run = Run(
                job_id=job_id,
                stage=payload["kind"],
                status="running",
                config={"config": payload["config"], "inputs": inputs, "seed": payload["seed"]},
                log_path="",
            )
            s.add(run)
            s.flush()
            run_id = run.id
            run_dir = job_dir / f"run-{run_id}"
            run_dir.mkdir(parents=True, exist_ok=True)
            run.log_path = str(run_dir / "stage.log")
        spec = {
            "kind": payload["kind"],
            "config": payload["config"],
            "inputs": {
                "data_path": inputs["data"].get("path") if inputs.get("data") else None,  # None for a mix
                "data_format": inputs["data"].get("format") if inputs.get("data") else None,
                "model_path": inputs["model"]["path"] if inputs.get("model") else None,
                "tokenizer_path": inputs["tokenizer"]["path"] if inputs.get("tokenizer") else None,
                **_mix_and_init(inputs),
            },
            # The work folder belongs to the job, not the run: a retry resumes its checkpoints.
            "work_dir": str(job_dir / "work"),
            "output_dir": str(run_dir / "output"),
            "seed": payload["seed"],
            "metrics_path": str(run_dir / "metrics.jsonl"),
            "result_path": str(run_dir / "result.json"),
        }
        spec_path = run_dir / "spec.json"
        spec_path.write_text(json.dumps(spec, indent=2))

        state, error, exit_code = self._supervise(job, run_id, beat, spec, spec_path)
        result = _read_json(Path(spec["result_path"]))
        if state == "superseded" or beat.check() == "lost":  # the fence: nothing more is written for the job
            return self._superseded(job, run_id, exit_code, result, Path(spec_path.parent / "stage.log"))
        output_path = None
        if state == "succeeded":
            try:
                output_path, result = self._register_output(payload, inputs, run_id, Path(spec["output_dir"]), result)
                # The stage's output folder was moved into the store: result.json names where it is now.
                result = {**result, "output_dir": output_path}
                write_json_atomically(Path(spec["result_path"]), result)
            except Exception as exc:  # a broken artifact must fail the job, not the worker
                state, error = "failed", f"could not register the stage's output: {describe_unexpected(exc)}"
        with self.ws.session() as s:
            run = s.get(Run, run_id)
            run.status = state
            run.exit_code = exit_code
            run.result = result
            run.output_path = output_path
            run.finished_at = utcnow()
        finish_job(self.ws, job_id, token, state, error)
        self.on_event(state, {**job, "error": error, "result": result, "output": output_path})
        return state

    def _execute_in_process(self, job: dict, token: str, payload: dict, inputs: dict) -> str:
        """Eval, gate and promote: registry work and an evaluation, recorded on a run like any stage."""
        from weightsmith.errors import UserError
        from weightsmith.evals.stages import GateRefusedError, run_in_worker

        with self.ws.session() as s:
            run = Run(job_id=job["id"], stage=payload["kind"], status="running",
                      config={"config": payload["config"], "inputs": inputs}, log_path="")
            s.add(run)
            s.flush()
            run_id = run.id
        state, error, result = "succeeded", None, {}
        try:
            result = run_in_worker(self.ws, payload["kind"], payload, inputs)
        except (GateRefusedError, UserError) as exc:
            state, error = "failed", str(exc)
            result = getattr(exc, "result", None) or {}  # a refusing gate's verdict is kept on its run
        except Exception as exc:  # the job fails, the worker goes on
            state, error = "failed", describe_unexpected(exc)  # never SQL text in a job's error
        with self.ws.session() as s:
            run = s.get(Run, run_id)
            run.status, run.result, run.finished_at = state, result, utcnow()
        finish_job(self.ws, job["id"], token, state, error)
        self.on_event(state, {**job, "error": error, "result": result})
        return state

    def _stop_before_starting(self, job: dict, token: str, claim: str) -> str:
        if claim == "lost":
            self.on_event("superseded", {**job, "error": _SUPERSEDED})
            return "superseded"
        finish_job(self.ws, job["id"], token, "cancelled", "cancelled by user")
        self.on_event("cancelled", {**job, "error": "cancelled by user"})
        return "cancelled"

    def _superseded(self, job: dict, run_id: int, exit_code: int | None, result: dict, log_path: Path) -> str:
        """The job was taken from this worker while its stage ran: record the run as failed, register nothing."""
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"{_SUPERSEDED}\n")
        with self.ws.session() as s:
            run = s.get(Run, run_id)
            run.status, run.exit_code, run.result, run.finished_at = "failed", exit_code, result, utcnow()
        self.on_event("superseded", {**job, "error": _SUPERSEDED})
        return "superseded"

    def _supervise(self, job: dict, run_id: int, beat: _Heartbeat, spec: dict, spec_path: Path):
        job_id = job["id"]
        module = STAGE_MODULES[spec["kind"]]
        log_path = Path(spec_path.parent / "stage.log")
        env = {"PYTHONUNBUFFERED": "1"}  # over the environment of the machine the stage runs on
        argv = ["-m", module, str(spec_path)]  # after the Python of that machine
        processes = int(spec["config"].get("processes") or 1)
        if processes > 1:
            # torchrun's launcher starts the ranks, restarts none, stops them all when one fails or when
            # it is terminated, and exits the way a single-process stage would; rank 0 writes the files.
            argv = ["-m", "weightsmith.training.launch", str(processes), str(spec_path)]
        # Each process of the stage computes with its share of the cores (torch reads these at start;
        # the runner also calls torch.set_num_threads, and tokenizers reads RAYON_NUM_THREADS).
        resources = stage_resources(spec["config"])
        if self.executor.remote:  # the CPUs the cluster reserved for the stage, on its node
            threads = resources.cpus
        else:
            threads = self.stage_threads(spec["config"])
            if threads is None and processes > 1:  # alone, but several ranks: they share the cores
                threads = _env_capped(_cores())
        if threads is not None:
            for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS", "WEIGHTSMITH_THREADS"):
                env[name] = str(max(1, threads // processes))
        # A stage of an earlier attempt may still live (its worker was presumed dead, e.g. paused): it is
        # stopped before this one starts, so two stages never train in the job's work folder at once.
        # (A stage on another machine, as on a Ray node, cannot be signalled from here: the new one waits for it.)
        stopped = stop_work_lock_holder(Path(spec["work_dir"]))
        if stopped:
            with open(log_path, "a", encoding="utf-8") as log:
                log.write(f"{stopped}\n")
        stage = self.executor.start(argv, env=env, log_path=log_path, resources=resources, job_id=job_id)
        with self.ws.session() as s:
            s.get(Run, run_id).pid = stage.pid
        tail = _MetricsTail(Path(spec["metrics_path"]))
        # With several stages at once, each line of their logs says whose it is.
        echo = _LogEcho(log_path, self.echo, prefix=f"[job {job_id}] " if self.concurrency > 1 else "")
        stopped_for = None  # "cancel" or "lost", once the heartbeat says the stage must stop
        max_steps = spec["config"].get("max_steps")
        while stage.running():
            time.sleep(min(self.poll_s, 0.5))
            self._store_metrics(run_id, rows := tail.read_new())
            for row in rows:  # a "progress" event per metrics row: the step, the loss, the lr
                self.on_event("progress", {**job, "metrics": row, "max_steps": max_steps})
            echo.pump()
            if beat.state != "ours" and stopped_for is None:
                stopped_for = beat.state
                stage.stop()
        self._store_metrics(run_id, tail.read_new())
        echo.pump()
        echo.finish()
        code, lost = stage.outcome()
        if stopped_for == "lost":
            return "superseded", _SUPERSEDED, code
        if stopped_for == "cancel":
            return "cancelled", "cancelled by user", code
        if lost:  # the executor lost the process (its Ray node died, say): a failure that a retry may cure
            return "failed", lost, code
        if code == 0:
            return "succeeded", None, code
        # The runner's own last words start so; under the launcher torchrun logs after them.
        last = _last_line(log_path, prefix={2: "error: ", 1: "stage failed: "}.get(code, "")) or _last_line(log_path)
        if code < 0:
            return "failed", f"stage process killed by signal {-code}", code
        if code == 2:
            return "failed", last or "the stage rejected its input", code
        return "failed", f"stage process exited with code {code}: {last}", code

    def stage_threads(self, config: dict[str, Any]) -> int | None:
        """The CPU threads a stage gets: its own ``threads`` setting, else this machine's cores divided among the
        stages running on it at once (the larger of this worker's concurrency and the jobs running on this host),
        never more than an ``OMP_NUM_THREADS`` the worker itself was started with; None for a stage alone on the
        machine (the libraries' own default: torch takes the physical cores)."""
        if config.get("threads"):
            return int(config["threads"])
        sharing = max(self.concurrency, self._jobs_running_here())
        if sharing <= 1:
            return None
        return _env_capped(max(1, _cores() // sharing))

    def _jobs_running_here(self) -> int:
        """Jobs of any project that workers on this host are running now (this one's included)."""
        from sqlalchemy import func

        host = self.name.rsplit(":", 1)[0]
        with self.ws.session() as s:
            return int(s.scalar(select(func.count(Job.id)).where(Job.state == "running",
                                                                 Job.worker.like(f"{host}:%"))) or 0)

    def _store_metrics(self, run_id: int, rows: list[dict]) -> None:
        if not rows:
            return
        with self.ws.session() as s:
            for row in rows:
                step = int(row.get("step", 0))
                for name, value in row.items():
                    if name != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                        s.add(RunMetric(run_id=run_id, step=step, name=name, value=float(value)))

    def _resolve_inputs(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Pin every input to a concrete path: upstream stages resolve to what they produced."""
        out: dict[str, Any] = {"data": payload.get("data")}
        if out["data"] and "stage" in out["data"]:
            out["data"] = self._upstream_dataset(payload, out["data"]["stage"])
        elif out["data"] and "mix" in out["data"]:  # each dataset of a mix, its weight kept
            out["data"] = {"mix": [
                {"name": e["name"], "weight": e["weight"],
                 **(self._upstream_dataset(payload, e["stage"]) if "stage" in e else
                    {k: e[k] for k in ("id", "ref", "path", "format")})}
                for e in out["data"]["mix"]
            ]}
        if payload.get("model_init"):  # a random initialization, instead of a model
            out["model_init"] = payload["model_init"]
        for field in ("model", "tokenizer"):
            ref = payload.get(field)
            if ref is None:
                out[field] = None
            elif "stage" in ref:
                out[field] = self._upstream_output(payload, ref["stage"])
            else:
                out[field] = ref
        return out

    def _upstream_run(self, payload: dict[str, Any], stage: str) -> Run:
        with self.ws.session() as s:
            job = s.scalar(
                select(Job).where(Job.pipeline_id == payload["pipeline_id"], Job.stage == stage)
            ) if payload.get("pipeline_id") else None
            run = (
                s.scalar(
                    select(Run).where(Run.job_id == job.id, Run.status == "succeeded").order_by(Run.id.desc())
                )
                if job
                else None
            )
            if run is None or not run.output_path:
                raise StageInputError(f"upstream stage '{stage}' has no successful output to start from")
            return run

    def _upstream_output(self, payload: dict[str, Any], stage: str) -> dict[str, Any]:
        run = self._upstream_run(payload, stage)
        return {
            "path": run.output_path,
            "id": run.result.get("model_version_id"),
            "ref": run.result.get("model_version") or run.output_path,
        }

    def _upstream_dataset(self, payload: dict[str, Any], stage: str) -> dict[str, Any]:
        dataset = self._upstream_run(payload, stage).result.get("dataset")
        if not dataset:
            raise StageInputError(f"upstream stage '{stage}' registered no dataset")
        return {k: dataset[k] for k in ("id", "ref", "path", "format")}

    def _register_output(self, payload, inputs, run_id, output_dir: Path, result: dict):
        if not output_dir.is_dir():
            raise StageInputError(f"the stage reported success but wrote nothing to {output_dir}")
        if payload["kind"] in DATASET_OUTPUT:
            return self._register_dataset(payload, output_dir, result)
        if payload["kind"] not in MODEL_KINDS:
            _digest, stored = self.ws.store.put_tree(output_dir, move=True)
            return str(stored), result
        parent = inputs.get("model") or {}
        version = register_version(
            self.ws,
            payload["model_name"],
            output_dir,
            stage=payload["kind"],
            parent_id=parent.get("id"),
            run_id=run_id,
            dataset_version_ids=[d["id"] for d in _datasets_of(inputs)],
            source=_source_of(inputs, parent),
            move=True,
            meta={"pipeline_stage": payload.get("stage"), "tokenizer": (inputs.get("tokenizer") or {}).get("path"),
                  **_mix_weights(inputs)},
        )
        return version["path"], {**result, "model_version": version["ref"], "model_version_id": version["id"]}


    def _register_dataset(self, payload, output_dir: Path, result: dict):
        """Version a generated dataset like any user dataset: validated, content-hashed, with provenance."""
        fmt = DATASET_OUTPUT[payload["kind"]]
        validated = validate(output_dir / "data.jsonl", fmt, max_chars=NO_LIMIT)  # rows made from accepted rows
        if not validated.ok():
            raise StageInputError(f"generated data is invalid: {validated.errors[0]}")
        if not validated.rows:
            raise StageInputError("the stage generated no rows")
        provenance = {"pipeline": payload.get("pipeline_id"), "stage": payload.get("stage"), **result.get("provenance", {})}
        dataset = store_validated(self.ws, payload["stage"], output_dir / "data.jsonl", validated, provenance)
        return dataset["path"], {**result, "dataset": dataset}


_SUPERSEDED = (
    "this attempt was superseded: its worker stopped heart-beating for longer than the stale window, so the "
    "job was taken from it (re-queued, re-claimed or cancelled); its stage was stopped and its output is not registered"
)


class _Heartbeat:
    """Marks a claimed job alive from a thread while the worker has it, and keeps the claim's last state.

    A thread, so the job stays alive through everything the worker does for it (resolving inputs,
    a stage process, an in-process gate, registering a large output), not only while it polls a stage.
    ``state`` is "ours", "cancel" or "lost" (:func:`weightsmith.jobs.queue.claim_state`).
    """

    def __init__(self, ws: Workspace, job_id: int, token: str, interval_s: float) -> None:
        self.ws, self.job_id, self.token, self.interval_s = ws, job_id, token, interval_s
        self.state = "ours"
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-job-{job_id}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stopped.wait(self.interval_s):
            try:
                self.state = claim_state(self.ws, self.job_id, self.token, beat=True)
            except Exception:  # noqa: BLE001 - a busy or briefly unreachable database: the next beat retries
                continue
            if self.state == "lost":
                return

    def check(self) -> str:
        """The claim's state now, read from the database (the fence before the worker acts)."""
        self.state = claim_state(self.ws, self.job_id, self.token)
        return self.state

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=30)


def _cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _env_capped(threads: int) -> int:
    """``threads``, but no more than the ``OMP_NUM_THREADS`` the worker was started with, if any."""
    limit = os.environ.get("OMP_NUM_THREADS", "")
    return min(threads, int(limit)) if limit.isdigit() and int(limit) > 0 else threads


def _mix_and_init(inputs: dict[str, Any]) -> dict[str, Any]:
    """The stage spec's inputs for a data mix and a random initialization (absent for a plain stage)."""
    out: dict[str, Any] = {}
    data = inputs.get("data") or {}
    if "mix" in data:
        out["data_mix"] = [{k: e[k] for k in ("name", "ref", "path", "format", "weight")} for e in data["mix"]]
    if inputs.get("model_init"):
        out["model_init"] = inputs["model_init"]
    return out


def _datasets_of(inputs: dict[str, Any]) -> list[dict[str, Any]]:
    """The dataset versions a stage trained on: its one dataset, or each of its mix."""
    data = inputs.get("data")
    if not data:
        return []
    return [e for e in data["mix"] if e.get("id") is not None] if "mix" in data else [data]


def _mix_weights(inputs: dict[str, Any]) -> dict[str, Any]:
    """A mix's weight per dataset version, for the model version's lineage (``data_weights``)."""
    data = inputs.get("data") or {}
    return {"data_weights": {e["ref"]: e["weight"] for e in data["mix"]}} if "mix" in data else {}


def _source_of(inputs: dict[str, Any], parent: dict[str, Any]) -> str | None:
    """What a version started from when no registered parent says it: a model folder, or a random init."""
    if inputs.get("model_init"):
        init = inputs["model_init"]
        return f"init: {init['init']} (size {init['size']})"
    return parent.get("path") if parent and not parent.get("id") else None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _last_line(path: Path, prefix: str = "") -> str:
    """The last non-empty line of the log (that starts with ``prefix``), or ""."""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln and ln.startswith(prefix)]
    return lines[-1] if lines else ""


class _MetricsTail:
    """Reads the complete JSON lines appended to a file since the last call."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0

    def read_new(self) -> list[dict]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        rows = []
        for line in chunk[: end + 1].splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
        return rows


class _LogEcho:
    """Copies what a stage appends to its log onto a stream; with a ``prefix``, whole lines only, each prefixed."""

    def __init__(self, path: Path, stream: TextIO | None, prefix: str = ""):
        self.path, self.stream, self.offset, self.prefix = path, stream, 0, prefix
        self._partial = b""

    def pump(self) -> None:
        if self.stream is None:
            return
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except FileNotFoundError:
            return
        self.offset += len(chunk)
        if self.prefix:
            lines = (self._partial + chunk).split(b"\n")
            self._partial = lines.pop()
            chunk = b"".join(self.prefix.encode() + line + b"\n" for line in lines)
        if chunk:
            self.stream.write(chunk.decode("utf-8", errors="replace"))
            self.stream.flush()

    def finish(self) -> None:
        """The last line, when the stage ended without a newline."""
        if self.stream is not None and self._partial:
            self.stream.write((self.prefix.encode() + self._partial + b"\n").decode("utf-8", errors="replace"))
            self.stream.flush()
            self._partial = b""
