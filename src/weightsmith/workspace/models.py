"""The workspace's tables (SQLAlchemy 2). Every schema change gets an Alembic migration."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    name: Mapped[str] = mapped_column(String(200))
    format: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    versions: Mapped[list[DatasetVersion]] = relationship(back_populates="dataset", order_by="DatasetVersion.version")


class DatasetVersion(Base):
    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("dataset_id", "version"), UniqueConstraint("dataset_id", "hash"))
    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    version: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(20))
    rows: Mapped[int] = mapped_column(Integer)
    tokens: Mapped[int] = mapped_column(Integer)
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    path: Mapped[str] = mapped_column(Text)  # normalized JSONL in the artifact store
    provenance: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    dataset: Mapped[Dataset] = relationship(back_populates="versions")


class Pipeline(Base):
    """One submission of a pipeline YAML: the DAG its jobs belong to."""

    __tablename__ = "pipelines"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    name: Mapped[str] = mapped_column(String(200))
    model_name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)  # resolved YAML (after overrides)
    source: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    pipeline_id: Mapped[int | None] = mapped_column(ForeignKey("pipelines.id"), nullable=True)
    stage: Mapped[str] = mapped_column(String(200))  # the stage's name in its pipeline
    kind: Mapped[str] = mapped_column(String(40))  # tokenizer | pretrain | cpt | sft | dpo | grpo | ...
    state: Mapped[str] = mapped_column(String(20), default="queued", index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    claim_token: Mapped[str | None] = mapped_column(String(64), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class JobDependency(Base):
    __tablename__ = "job_dependencies"
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    depends_on: Mapped[int] = mapped_column(ForeignKey("jobs.id"), primary_key=True)


class Run(Base):
    """One attempt at executing a job: the resolved config, its process, its metrics and log."""

    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    stage: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(20), default="running")
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)  # resolved hyperparameters + inputs
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    log_path: Mapped[str] = mapped_column(Text)
    output_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class RunMetric(Base):
    __tablename__ = "run_metrics"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(100))
    value: Mapped[float] = mapped_column(Float)


class Model(Base):
    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    versions: Mapped[list[ModelVersion]] = relationship(back_populates="model", order_by="ModelVersion.version")


class ModelVersion(Base):
    """Immutable: a directory that from_pretrained opens, with lineage to data, run and parent."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    version: Mapped[int] = mapped_column(Integer)
    stage: Mapped[str] = mapped_column(String(40))
    path: Mapped[str] = mapped_column(Text)
    hash: Mapped[str] = mapped_column(String(64))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), nullable=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), nullable=True)
    source: Mapped[str | None] = mapped_column(Text, nullable=True)  # an outside HF dir it came from
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    model: Mapped[Model] = relationship(back_populates="versions")
    parent: Mapped[ModelVersion | None] = relationship(remote_side="ModelVersion.id")


class ModelVersionData(Base):
    """Lineage: which dataset versions a model version was trained on."""

    __tablename__ = "model_version_data"
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), primary_key=True)
    dataset_version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id"), primary_key=True)


# -- evals, gates and registry aliases (issue #4) ---------------------------------------------


class EvalRun(Base):
    """One run of a KPI suite on one model: written whole, in one transaction, when it has finished."""

    __tablename__ = "eval_runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    suite_name: Mapped[str] = mapped_column(String(200))
    # Same hash = same KPI definitions on the same dataset contents, so a gate may reuse the run.
    suite_hash: Mapped[str] = mapped_column(String(64), index=True)
    suite: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the resolved suite spec
    source: Mapped[str | None] = mapped_column(Text, nullable=True)  # the suite file, when there was one
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), nullable=True, index=True)
    model_ref: Mapped[str] = mapped_column(Text)  # NAME@vN, or the local directory evaluated
    device: Mapped[str] = mapped_column(String(40))
    seconds: Mapped[float] = mapped_column(Float)
    started_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class EvalKpiResult(Base):
    """A KPI's aggregate in one run: value, confidence interval, target and whether it was met."""

    __tablename__ = "eval_kpi_results"
    __table_args__ = (UniqueConstraint("run_id", "kpi"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("eval_runs.id"), index=True)
    kpi: Mapped[str] = mapped_column(String(200))
    metric: Mapped[str] = mapped_column(String(200))
    aggregate: Mapped[str] = mapped_column(String(20))
    direction: Mapped[str] = mapped_column(String(10))  # higher | lower is better
    retention: Mapped[bool] = mapped_column(default=False)
    dataset_version_id: Mapped[int | None] = mapped_column(ForeignKey("dataset_versions.id"), nullable=True)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    ci_low: Mapped[float | None] = mapped_column(Float, nullable=True)
    ci_high: Mapped[float | None] = mapped_column(Float, nullable=True)
    n: Mapped[int] = mapped_column(Integer)
    target: Mapped[float | None] = mapped_column(Float, nullable=True)
    met_target: Mapped[bool | None] = mapped_column(nullable=True)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class EvalExample(Base):
    """One example of one KPI in one run: what the model was asked, what it said, its score and timing."""

    __tablename__ = "eval_examples"
    __table_args__ = (UniqueConstraint("run_id", "kpi", "position"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("eval_runs.id"), index=True)
    kpi: Mapped[str] = mapped_column(String(200))
    position: Mapped[int] = mapped_column(Integer)  # the row's index in the KPI's dataset: pairs runs
    prompt: Mapped[Any | None] = mapped_column(JSON, nullable=True)  # as rendered for the model
    prediction: Mapped[str | None] = mapped_column(Text, nullable=True)
    reference: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the row's other columns
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    finish_reason: Mapped[str | None] = mapped_column(String(10), nullable=True)


class Gate(Base):
    """A verdict: a candidate against floors and (when there is one) a baseline, rule by rule."""

    __tablename__ = "eval_gates"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    suite_name: Mapped[str] = mapped_column(String(200))
    suite_hash: Mapped[str] = mapped_column(String(64))
    candidate_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    baseline_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), nullable=True)
    baseline_ref: Mapped[str | None] = mapped_column(String(400), nullable=True)  # as given, e.g. quill@champion
    alias: Mapped[str | None] = mapped_column(String(100), nullable=True)  # the alias the baseline was named by
    candidate_run_id: Mapped[int] = mapped_column(ForeignKey("eval_runs.id"))
    baseline_run_id: Mapped[int | None] = mapped_column(ForeignKey("eval_runs.id"), nullable=True)
    passed: Mapped[bool] = mapped_column()
    floors_only: Mapped[bool] = mapped_column(default=False)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class GateRule(Base):
    __tablename__ = "eval_gate_rules"
    id: Mapped[int] = mapped_column(primary_key=True)
    gate_id: Mapped[int] = mapped_column(ForeignKey("eval_gates.id"), index=True)
    kpi: Mapped[str] = mapped_column(String(200))
    rule: Mapped[str] = mapped_column(String(40))  # floor | max_regression | paired_test
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    baseline: Mapped[float | None] = mapped_column(Float, nullable=True)
    threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    p_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    passed: Mapped[bool] = mapped_column()
    retention: Mapped[bool] = mapped_column(default=False)
    detail: Mapped[str] = mapped_column(Text, default="")


class ModelAlias(Base):
    """A movable name (champion, candidate, ...) for one version of a model; moved only by promote/rollback."""

    __tablename__ = "model_aliases"
    __table_args__ = (UniqueConstraint("model_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    name: Mapped[str] = mapped_column(String(100))
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    suite_name: Mapped[str | None] = mapped_column(String(200), nullable=True)  # the suite its gates use
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class AliasMove(Base):
    """Every move of an alias, kept forever: who moved it, why, on which gate, and whether it was forced."""

    __tablename__ = "model_alias_moves"
    id: Mapped[int] = mapped_column(primary_key=True)
    alias_id: Mapped[int] = mapped_column(ForeignKey("model_aliases.id"), index=True)
    action: Mapped[str] = mapped_column(String(20))  # promote | rollback
    from_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), nullable=True)
    to_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    gate_id: Mapped[int | None] = mapped_column(ForeignKey("eval_gates.id"), nullable=True)
    forced: Mapped[bool] = mapped_column(default=False)
    actor: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


# -- tenancy, audit and idempotency (the service layer, issue #13) ----------------------------


class ApiToken(Base):
    """A project's bearer token for the REST API and the MCP server: only its sha256 is stored."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # the first characters, to tell tokens apart in lists
    scopes: Mapped[list[Any]] = mapped_column(default=list)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class AuditEntry(Base):
    """One mutating call of a service verb, from any adapter: who, what, on what, and how it ended."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    actor: Mapped[str] = mapped_column(String(200))
    actor_kind: Mapped[str] = mapped_column(String(20))  # person | token
    adapter: Mapped[str] = mapped_column(String(20))  # cli | api | mcp | python
    verb: Mapped[str] = mapped_column(String(100))
    target: Mapped[str | None] = mapped_column(Text, nullable=True)
    request_digest: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(40))  # ok | the error's kind
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


class IdempotencyRecord(Base):
    """Stripe's contract: a key remembers its request's digest and, once done, its response."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("project_id", "verb", "key"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    verb: Mapped[str] = mapped_column(String(100))
    key: Mapped[str] = mapped_column(String(200))
    request_digest: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(20), default="in_flight")  # in_flight | done
    response: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


# -- serving: the request log, feedback and per-project settings (issue #14) -------------------


class ProjectSetting(Base):
    """A project's setting by key (e.g. ``serve.logging``: full | redacted | off), with who set it last."""

    __tablename__ = "project_settings"
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)
    updated_by: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class RequestLogEntry(Base):
    """One served request and its response: what was asked, what the version answered, how fast.

    Written in batches by the server's background writer (:mod:`weightsmith.serve.log`), never on
    the request path. A ``redacted`` row keeps the counts and timings but no content or token ids.
    """

    __tablename__ = "request_log"
    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), unique=True)  # the response's id, e.g. chatcmpl-...
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, index=True)  # when the request arrived (UTC)
    token_name: Mapped[str | None] = mapped_column(String(200), nullable=True)  # the caller's token (or api-key)
    endpoint: Mapped[str] = mapped_column(String(40))  # chat.completions | completions
    model: Mapped[str] = mapped_column(String(400))  # as the request named it: quill, quill@champion, quill@v4
    model_name: Mapped[str] = mapped_column(String(200), index=True)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), nullable=True)
    version: Mapped[str] = mapped_column(String(300))  # the concrete version that answered, NAME@vN
    messages: Mapped[Any | None] = mapped_column(JSON, nullable=True)  # chat: the request's messages
    prompt: Mapped[Any | None] = mapped_column(JSON, nullable=True)  # completions: the prompt (text or token ids)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the sampling parameters used
    choices: Mapped[list[Any]] = mapped_column(default=list)  # [{index, text, finish_reason, token_ids}]
    finish_reason: Mapped[str | None] = mapped_column(String(20), nullable=True)  # the first choice's
    status: Mapped[str] = mapped_column(String(20), default="ok")  # ok | cancelled (the client went away)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    prompt_token_ids: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    time_to_first_token: Mapped[float | None] = mapped_column(Float, nullable=True)  # seconds
    total_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    redacted: Mapped[bool] = mapped_column(default=False)


class RequestFeedback(Base):
    """A user's verdict on one logged response (``POST /v1/feedback``): a score and an optional comment."""

    __tablename__ = "request_feedback"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    score: Mapped[float] = mapped_column(Float)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    actor: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
