"""The Python SDK: ``weightsmith.Client(base_url, token)`` speaks the REST API and returns the service's result models.

    from weightsmith import Client

    ws = Client("http://127.0.0.1:8100", token)
    ws.datasets.add("docs", "text", path="corpus/")         # read here, uploaded there
    run = ws.pipelines.submit(path="pipeline.yaml")          # 202: the jobs are queued
    job = ws.jobs.wait(run.jobs[-1].id)                      # poll until it ends
    ws.jobs.metrics(job.id, names=["loss"]).points
    ws.traffic.export("quill", "served", min_score=0.5)       # served requests -> a dataset version
    ws.evals.compare_runs(12, 15).kpis                        # two stored runs, paired

Every method is one REST call (one service verb); errors are the service's typed errors
(:class:`~weightsmith.errors.NotFound`, ``Forbidden``, ``Unauthorized``, ``Conflict``, and
``UserError`` for bad input, whose ``errors`` list every bad line of an upload).
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from weightsmith.errors import Conflict, Forbidden, NotFound, Unauthorized, UserError
from weightsmith.service.datasets import DatasetList, DatasetVersionInfo
from weightsmith.service.evals import EvalComparison, EvalHistory, EvalReport, EvalRunInfo, ExportedRows, GateVerdict
from weightsmith.service.gc import GarbageCollected
from weightsmith.service.jobs import JobDetail, JobInfo, JobList, LogChunk, MetricHistory
from weightsmith.service.models import AliasMoved, ModelAliases, ModelList, ModelVersionDetail
from weightsmith.service.pipelines import PipelineInfo, PipelineList, PipelineSubmitted
from weightsmith.service.projects import AuditList, CreatedToken, TokenInfo, TokenList
from weightsmith.service.traffic import FeedbackInfo, TrafficDetail, TrafficExported, TrafficList

_ERRORS = {401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict}
TERMINAL = ("succeeded", "failed", "cancelled")


class ServerError(Exception):
    """The server answered 5xx (a bug on its side); the message is its error body."""


class _Resource:
    def __init__(self, client: Client):
        self._client = client

    def _call(self, method: str, path: str, model, **kwargs):
        return self._client.request(method, path, model, **kwargs)


class Datasets(_Resource):
    def add(self, name: str, format: str, *, path: str | Path | None = None, content: str | None = None,
            max_chars: int | None = None, idempotency_key: str | None = None) -> DatasetVersionInfo:
        """Upload a local file or folder (``path``) or text (``content``) as the dataset's next version.

        A folder of ``.txt``/``.md`` documents (format ``text``) is sent as one JSONL of ``{"text"}`` rows.

        Raises:
            UserError: bad lines; ``errors`` lists each as ``FILE:LINE: reason``.
        """
        filename = "upload.jsonl"
        if path is not None:
            path = Path(path).expanduser()
            if path.is_dir():
                docs = sorted(p for p in path.rglob("*") if p.suffix.lower() in (".txt", ".md") and p.is_file())
                content = "".join(json.dumps({"text": p.read_text(encoding="utf-8")}) + "\n" for p in docs)
                filename = f"{path.name}.jsonl"
            else:
                content, filename = path.read_text(encoding="utf-8"), path.name
        if content is None:
            raise UserError("datasets.add needs path= (a local file or folder) or content= (the data as text).")
        body = {"name": name, "format": format, "content": content, "filename": filename, "max_chars": max_chars}
        return self._call("POST", "/v1/datasets", DatasetVersionInfo, json=body, idempotency_key=idempotency_key)

    def list(self) -> DatasetList:
        return self._call("GET", "/v1/datasets", DatasetList)

    def show(self, ref: str) -> DatasetVersionInfo:
        return self._call("GET", f"/v1/datasets/{ref}", DatasetVersionInfo)


class Pipelines(_Resource):
    def submit(self, *, path: str | Path | None = None, yaml: str | None = None, spec: dict | None = None,
               overrides: list[str] = (), idempotency_key: str | None = None) -> PipelineSubmitted:
        """Queue a pipeline (a local YAML file, YAML text or a mapping); returns at once with the job ids."""
        if path is not None:
            yaml = Path(path).expanduser().read_text(encoding="utf-8")
        body = {"yaml": yaml, "spec": spec, "overrides": list(overrides)}
        return self._call("POST", "/v1/pipelines", PipelineSubmitted, json={k: v for k, v in body.items() if v is not None},
                          idempotency_key=idempotency_key)

    def list(self, limit: int = 100) -> PipelineList:
        return self._call("GET", "/v1/pipelines", PipelineList, params={"limit": limit})

    def show(self, pipeline_id: int) -> PipelineInfo:
        return self._call("GET", f"/v1/pipelines/{pipeline_id}", PipelineInfo)

    def cancel(self, pipeline_id: int) -> PipelineInfo:
        return self._call("POST", f"/v1/pipelines/{pipeline_id}/cancel", PipelineInfo)

    def wait(self, pipeline_id: int, *, timeout: float = 3600, poll: float = 1.0) -> PipelineInfo:
        """Poll until every job of the pipeline has ended; returns the pipeline then."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.show(pipeline_id)
            if all(j.state in TERMINAL for j in info.jobs) or time.monotonic() > deadline:
                return info
            time.sleep(poll)


class Jobs(_Resource):
    def list(self, *, state: str | None = None, pipeline: int | None = None) -> JobList:
        params = {k: v for k, v in {"state": state, "pipeline": pipeline}.items() if v is not None}
        return self._call("GET", "/v1/jobs", JobList, params=params)

    def show(self, job_id: int) -> JobDetail:
        return self._call("GET", f"/v1/jobs/{job_id}", JobDetail)

    def cancel(self, job_id: int) -> JobInfo:
        return self._call("POST", f"/v1/jobs/{job_id}/cancel", JobInfo)

    def retry(self, job_id: int) -> JobInfo:
        return self._call("POST", f"/v1/jobs/{job_id}/retry", JobInfo)

    def logs(self, job_id: int, offset: int = 0) -> LogChunk:
        return self._call("GET", f"/v1/jobs/{job_id}/logs", LogChunk, params={"offset": offset})

    def metrics(self, job_id: int, offset: int = 0, names: list[str] | None = None) -> MetricHistory:
        return self._call("GET", f"/v1/jobs/{job_id}/metrics", MetricHistory, params={"offset": offset, "name": names or []})

    def wait(self, job_id: int, *, timeout: float = 3600, poll: float = 1.0) -> JobDetail:
        """Poll until the job has ended (succeeded, failed or cancelled); returns it then (or at ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.show(job_id)
            if job.state in TERMINAL or time.monotonic() > deadline:
                return job
            time.sleep(poll)


class Models(_Resource):
    def list(self) -> ModelList:
        return self._call("GET", "/v1/models", ModelList)

    def show(self, ref: str) -> ModelVersionDetail:
        return self._call("GET", f"/v1/models/{ref}", ModelVersionDetail)

    def aliases(self, name: str) -> ModelAliases:
        return self._call("GET", f"/v1/models/{name}/aliases", ModelAliases)

    def history(self, name: str, suite: str | None = None) -> EvalHistory:
        return self._call("GET", f"/v1/models/{name}/history", EvalHistory, params={"suite": suite} if suite else None)

    def promote(self, ref: str, alias: str, *, force: bool = False, reason: str | None = None) -> AliasMoved:
        return self._call("POST", f"/v1/models/{ref}/promote", AliasMoved, json={"alias": alias, "force": force, "reason": reason})

    def rollback(self, name: str, alias: str, *, reason: str | None = None) -> AliasMoved:
        return self._call("POST", f"/v1/models/{name}/rollback", AliasMoved, json={"alias": alias, "reason": reason})


class Evals(_Resource):
    def start(self, suite: dict, model: str, *, device: str | None = None) -> JobInfo:
        """Queue a run of an inline suite (its KPIs read workspace datasets) on a model version; returns the job."""
        return self._call("POST", "/v1/evals", JobInfo, json={"suite": suite, "model": model, "device": device})

    def run(self, suite: dict, model: str, *, device: str | None = None, timeout: float = 3600) -> EvalRunInfo:
        """Start an eval job, wait for it, and return the stored run.

        Raises:
            UserError: the job failed (its error sentence).
        """
        job = self._client.jobs.wait(self.start(suite, model, device=device).id, timeout=timeout)
        if job.state != "succeeded":
            raise UserError(f"eval job {job.id} {job.state}: {job.error}")
        return self.show(job.runs[-1].result["run"])

    def show(self, run_id: int) -> EvalRunInfo:
        return self._call("GET", f"/v1/evals/{run_id}", EvalRunInfo)

    def report(self, run_id: int, gate: int | None = None) -> EvalReport:
        return self._call("GET", f"/v1/evals/{run_id}/report", EvalReport, params={"gate": gate} if gate else None)

    def compare_runs(self, a: int, b: int, *, kpis: list[str] | None = None) -> EvalComparison:
        """Two stored runs of one suite, KPI by KPI: the paired difference B − A, its 95% interval, McNemar's exact p.

        Raises:
            NotFound: either run is not in the project.
            UserError: the runs are of different suites or data.
        """
        return self._call("GET", "/v1/evals/compare", EvalComparison, params={"a": a, "b": b, "kpi": kpis or []})

    def export(self, run_id: int, *, kpi: str | None = None, offset: int = 0, limit: int = 1000) -> ExportedRows:
        """One page of a run's examples (prompt, reference, output, score, slice); read on with ``next_offset``
        until ``done``."""
        params = {"offset": offset, "limit": limit, **({"kpi": kpi} if kpi is not None else {})}
        return self._call("GET", f"/v1/evals/{run_id}/examples", ExportedRows, params=params)


class Gates(_Resource):
    def start(self, suite: dict, candidate: str, baseline: str | None = None, *, device: str | None = None) -> JobInfo:
        """Queue a gate of a candidate against a baseline (e.g. NAME@champion) on an inline suite; returns the job."""
        body = {"suite": suite, "candidate": candidate, "baseline": baseline, "device": device}
        return self._call("POST", "/v1/gates", JobInfo, json=body)

    def run(self, suite: dict, candidate: str, baseline: str | None = None, *, device: str | None = None,
            timeout: float = 3600) -> GateVerdict:
        """Start a gate job, wait for it, and return the verdict (``passed`` says whether it passed)."""
        job = self._client.jobs.wait(self.start(suite, candidate, baseline, device=device).id, timeout=timeout)
        gate = (job.runs[-1].result or {}).get("gate") if job.runs else None
        if gate is None:
            raise UserError(f"gate job {job.id} {job.state} without a verdict: {job.error}")
        return self.show(gate)

    def show(self, gate_id: int) -> GateVerdict:
        return self._call("GET", f"/v1/gates/{gate_id}", GateVerdict)


def _time(value: datetime | str | None) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


class Traffic(_Resource):
    def list(self, *, model: str | None = None, version: str | None = None, since: datetime | str | None = None,
             until: datetime | str | None = None, limit: int = 50) -> TrafficList:
        """The project's served requests, newest first; ``since``/``until`` are UTC (a naive datetime is UTC)."""
        params = {"model": model, "version": version, "since": _time(since), "until": _time(until), "limit": limit}
        return self._call("GET", "/v1/traffic", TrafficList, params={k: v for k, v in params.items() if v is not None})

    def show(self, request_id: str) -> TrafficDetail:
        """One served request whole (messages or prompt, choices with token ids, timings, feedback)."""
        return self._call("GET", f"/v1/traffic/{request_id}", TrafficDetail)

    def feedback(self, request_id: str, score: float, *, comment: str | None = None,
                 idempotency_key: str | None = None) -> FeedbackInfo:
        """Record a score (and comment) on one served response (the ``serve`` scope)."""
        return self._call("POST", f"/v1/traffic/{request_id}/feedback", FeedbackInfo,
                          json={"score": score, "comment": comment}, idempotency_key=idempotency_key)

    def export(self, model: str, to_dataset: str, *, format: str = "chat", endpoint: str = "chat.completions",
               version: str | None = None, since: datetime | str | None = None, until: datetime | str | None = None,
               min_score: float | None = None, include_length: bool = False,
               idempotency_key: str | None = None) -> TrafficExported:
        """Turn a window of one model's served requests into a dataset version (``chat`` for SFT, ``prompt``).

        Raises:
            UserError: no request in the window gives a row (the message counts what was skipped, and why).
        """
        body = {"model": model, "to_dataset": to_dataset, "format": format, "endpoint": endpoint, "version": version,
                "since": _time(since), "until": _time(until), "min_score": min_score, "include_length": include_length}
        return self._call("POST", "/v1/traffic/export", TrafficExported, json=body, idempotency_key=idempotency_key)


class WorkspaceAdmin(_Resource):
    def gc(self, *, dry_run: bool = False, idempotency_key: str | None = None) -> GarbageCollected:
        """Free the disk of the project's ended jobs (checkpoints, intermediate files); the ``admin`` scope.

        With ``dry_run`` it only reports what would be freed. Registered model versions are never touched.
        """
        return self._call("POST", "/v1/workspace/gc", GarbageCollected, json={"dry_run": dry_run},
                          idempotency_key=idempotency_key)


class Tokens(_Resource):
    def create(self, project: str, name: str, scopes: list[str]) -> CreatedToken:
        return self._call("POST", "/v1/tokens", CreatedToken, json={"project": project, "name": name, "scopes": scopes})

    def list(self) -> TokenList:
        return self._call("GET", "/v1/tokens", TokenList)

    def revoke(self, token_id: int) -> TokenInfo:
        return self._call("POST", f"/v1/tokens/{token_id}/revoke", TokenInfo)


class Client:
    """A weightsmith REST API, as Python.

    Args:
        base_url: e.g. ``http://127.0.0.1:8100`` (``weightsmith api`` prints it).
        token: a project token (``weightsmith tokens create``).
        timeout: seconds per request (evals and gates block until they have run).
    """

    def __init__(self, base_url: str, token: str, *, timeout: float = 600):
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers={"Authorization": f"Bearer {token}"}, timeout=timeout)
        self.datasets = Datasets(self)
        self.pipelines = Pipelines(self)
        self.jobs = Jobs(self)
        self.models = Models(self)
        self.evals = Evals(self)
        self.gates = Gates(self)
        self.tokens = Tokens(self)
        self.traffic = Traffic(self)
        self.workspace = WorkspaceAdmin(self)

    def audit(self, limit: int = 100, verb: str | None = None) -> AuditList:
        return self.request("GET", "/v1/audit", AuditList, params={"limit": limit, **({"verb": verb} if verb else {})})

    def request(self, method: str, path: str, model, *, idempotency_key: str | None = None, **kwargs: Any):
        """One call; returns ``model`` parsed from the answer, or raises the typed error the status stands for."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        response = self._http.request(method, path, headers=headers, **kwargs)
        if response.status_code >= 400:
            raise _error(response)
        return model.model_validate(response.json())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _error(response: httpx.Response) -> Exception:
    try:
        body = response.json()["error"]
        message, details = body["message"], body.get("details") or []
    except (ValueError, KeyError, TypeError):
        message, details = response.text[:500] or response.reason_phrase, []
    if response.status_code >= 500:
        return ServerError(f"{response.status_code}: {message}")
    exc = _ERRORS.get(response.status_code, UserError)(message)
    exc.errors = details
    return exc
