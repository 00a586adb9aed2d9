"""A pipeline YAML becomes datasets plus a DAG of jobs.

Everything a user can get wrong is checked before anything is written: the YAML's keys (by
:mod:`weightsmith.config`), every dataset file (every bad line), each stage's dataset format,
and every model or tokenizer it names outside the pipeline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from weightsmith.config import DATASET_OUTPUT, MIX_FORMATS, STAGE_DATA_FORMAT, PipelineSpec, StageSpec
from weightsmith.data.formats import validate
from weightsmith.data.ingest import InvalidData, resolve_dataset, store_validated
from weightsmith.errors import UserError, shorten
from weightsmith.evals.stages import resolve_suite_path
from weightsmith.jobs.queue import insert_job, job_dict
from weightsmith.workspace import Workspace
from weightsmith.workspace.models import Job, Pipeline
from weightsmith.workspace.aliases import check_alias_name
from weightsmith.workspace.registry import resolve_model


def submit_pipeline(
    ws: Workspace, spec: PipelineSpec, *, source: str | None = None, idempotency_key: str | None = None,
    actor: str | None = None,
) -> dict[str, Any]:
    """Add the pipeline's datasets and queue one job per stage; return {"pipeline", "jobs", "datasets"}."""
    base = Path(spec.base_dir)
    # 1. Validate every dataset file the pipeline brings (all errors, before anything is stored).
    validated = {}
    for name, ds in spec.datasets.items():
        path = (base / ds.path) if not Path(ds.path).is_absolute() else Path(ds.path)
        if not path.exists():
            raise UserError(f"datasets.{name}.path: {shorten(str(path), 300)} does not exist.")
        result = validate(path, ds.format, max_chars=ds.max_chars)
        if not result.ok():
            raise InvalidData(result.errors, path)
        validated[name] = (path, result)

    # 2. Resolve each stage's references without writing anything.
    stage_names = {s.name for s in spec.stages}
    plans = []
    for stage in spec.stages:
        plans.append(_plan_stage(ws, spec, stage, stage_names, validated))

    # 3. Write: dataset versions, then the pipeline row and its jobs in dependency order, as one
    # transaction: a pipeline is never half-queued, and concurrent submissions under one
    # idempotency key serialize, so the second finds the first's jobs and returns them.
    added = {name: store_validated(ws, name, path, result) for name, (path, result) in validated.items()}
    ordered = _topological(spec.stages, plans)
    for stage, plan in ordered:
        data_ref = plan.pop("data_ref")
        if data_ref is not None and "mix" in data_ref:
            plan["data"] = {"mix": [{"name": e["mix_key"], "weight": e["weight"], **_pinned(e, added)}
                                    for e in data_ref["mix"]]}
        elif data_ref is not None:
            plan["data"] = _pinned(data_ref, added)
        if actor is not None:  # who submitted it: a promote stage moves the alias in their name
            plan["actor"] = actor
    project_id = ws.project_id

    def queue_dag(s) -> tuple[int, list[dict[str, Any]]]:
        keys = {stage.name: f"{idempotency_key}:{stage.name}" for stage, _ in ordered} if idempotency_key else {}
        if keys:
            earlier = s.scalar(select(Job).where(Job.project_id == project_id,
                                                 Job.idempotency_key.in_(list(keys.values()))).limit(1))
            if earlier is not None:  # submitted before under this key: the same pipeline and jobs
                same = s.scalars(select(Job).where(Job.pipeline_id == earlier.pipeline_id).order_by(Job.id))
                return earlier.pipeline_id, [job_dict(s, job) for job in same]
        row = Pipeline(
            project_id=project_id,
            name=spec.name,
            model_name=spec.model,
            spec=spec.model_dump(mode="json"),
            source=source,
        )
        s.add(row)
        s.flush()
        job_ids: dict[str, int] = {}
        jobs = []
        for stage, plan in ordered:
            deps = [job_ids[name] for name in stage.upstream(stage_names)]
            job, _created = insert_job(
                s,
                project_id,
                kind=stage.kind,
                stage=stage.name,
                payload=plan,
                depends_on=deps,
                pipeline_id=row.id,
                idempotency_key=keys.get(stage.name),
            )
            job_ids[stage.name] = job["id"]
            jobs.append(job)
        return row.id, jobs

    pipeline_id, jobs = ws.transact(queue_dag)
    return {"pipeline": pipeline_id, "name": spec.name, "model": spec.model, "jobs": jobs, "datasets": list(added.values())}


def _plan_stage(ws: Workspace, spec: PipelineSpec, stage: StageSpec, stage_names: set[str], validated) -> dict[str, Any]:
    key = f"stages.{stage.name}"
    plan: dict[str, Any] = {
        "kind": stage.kind,
        "config": stage.config,
        "seed": spec.seed,
        "model_name": spec.model,
        "data_ref": None,
        "model": None,
        "tokenizer": None,
    }
    if stage.kind in ("eval", "gate"):
        try:
            plan["suite_path"] = resolve_suite_path(stage.config["suite"], spec.base_dir)
        except UserError as exc:
            raise UserError(f"{key}.suite: {exc}") from exc
    if stage.kind == "promote":  # the alias it will move, refused now rather than after the gate ran
        try:
            check_alias_name(stage.config["alias"])
        except UserError as exc:
            raise UserError(f"{key}.alias: {exc}") from exc
    if isinstance(stage.data, str):
        plan["data_ref"] = _data_ref(ws, spec, stage, stage.data, f"{key}.data", stage_names, validated)
        if stage.kind in ("grpo", "pairs"):
            _check_rewards(stage, plan["data_ref"], validated, key)
    elif stage.data is not None:
        plan["data_ref"] = {"mix": _mix_refs(ws, spec, stage, key, stage_names, validated)}
    if stage.model_init is not None:  # a fresh model: its tokenizer (below) is the stage's tokenizer
        plan["model_init"] = stage.model_init
    for field in ("model", "tokenizer"):
        ref = getattr(stage, field)
        if ref is None:
            continue
        if ref in stage_names:
            plan[field] = {"stage": ref}
        elif field == "tokenizer" and Path(ref).expanduser().is_dir() and (Path(ref) / "tokenizer.json").exists():
            plan[field] = {"path": str(Path(ref).expanduser().resolve()), "id": None, "ref": ref}
        else:
            try:
                plan[field] = resolve_model(ws, _relative(ref, spec.base_dir))
            except UserError as exc:
                raise UserError(f"{key}.{field}: {exc}") from exc
    return plan


def _pinned(data_ref: dict, added: dict) -> dict:
    """A planned dataset as the job payload holds it: a producing stage (resolved when it has run), or a version."""
    if "stage" in data_ref:
        return data_ref
    if data_ref["name"] in added:  # pin the version this submission just added
        data_ref = added[data_ref["name"]]
    return {k: data_ref[k] for k in ("id", "ref", "path", "format")}


def _data_ref(
    ws: Workspace, spec: PipelineSpec, stage: StageSpec, data: str, shown: str, stage_names: set[str], validated,
    want: tuple[str, ...] | None = None,
) -> dict:
    """The dataset a stage reads: one the pipeline brings, another stage's output, or a workspace version.

    Args:
        data: the name the stage gives (its ``data:``, or a key of its mix).
        shown: the key messages name (``stages.sft.data`` or ``stages.sft.data.qa``).
        want: the formats a mix of this stage may hold; None for a single dataset (its stage's one format).
    """
    data_name = data.partition("@")[0]
    if data in stage_names:  # a dataset another stage of this pipeline produces
        producer = next(s for s in spec.stages if s.name == data)
        fmt = DATASET_OUTPUT.get(producer.kind)
        if fmt is None:
            raise UserError(
                f"{shown}: stage '{data}' ({producer.kind}) produces no dataset; if you mean the dataset "
                f"'{data}', the name is used twice: rename the stage."
            )
        data_ref = {"stage": data, "format": fmt}
    elif data_name in validated and "@" not in data:
        fmt = validated[data_name][1].format
        data_ref = {"name": data_name, "format": fmt}
    elif want is None:
        data_ref = resolve_dataset(ws, data)
        fmt = data_ref["format"]
    else:
        try:
            data_ref = resolve_dataset(ws, data)
        except UserError as exc:
            raise UserError(f"{shown}: {exc}") from exc
        fmt = data_ref["format"]
    if want is None and fmt != STAGE_DATA_FORMAT[stage.kind]:
        raise UserError(
            f"{shown}: dataset {shorten(data)} is {fmt} data, but a {stage.kind} stage trains on "
            f"{STAGE_DATA_FORMAT[stage.kind]} data."
        )
    if want is not None and fmt not in want:
        raise UserError(
            f"{shown}: dataset {shorten(data)} is {fmt} data, but a {stage.kind} stage trains on (and mixes) "
            f"{' or '.join(want)} data; take it out of the mix."
        )
    return data_ref


def _mix_refs(ws: Workspace, spec: PipelineSpec, stage: StageSpec, key: str, stage_names: set[str], validated) -> list:
    """Every dataset of a stage's mix, resolved and checked like a single one; what the mix itself needs."""
    want = MIX_FORMATS[stage.kind]
    refs = []
    for name, weight in stage.data.items():
        ref = _data_ref(ws, spec, stage, name, f"{key}.data.{name}", stage_names, validated, want=want)
        if stage.kind == "grpo":
            _check_rewards(stage, ref, validated, key, which=f" (dataset '{name}' of the mix)")
        refs.append({**ref, "mix_key": name, "weight": weight})
    if stage.kind == "sft" and not any(ref["format"] == "chat" for ref in refs):
        raise UserError(
            f"{key}.data: the mix holds no chat dataset; an sft mix fine-tunes on chat data and replays its text "
            "datasets next to it (for text alone, use a cpt stage)."
        )
    return refs


def _check_rewards(stage: StageSpec, data_ref: dict, validated, key: str, which: str = "") -> None:
    """A grpo/pairs stage's rewards against the reward contract on its rows, now rather than after the
    stages before it have trained (the stage checks again, as it checks everything it is given)."""
    import json

    from weightsmith.synth.pairs import check_reward
    from weightsmith.training.grpo import resolve_rewards

    if data_ref.get("name") in validated and "ref" not in data_ref:  # a file this pipeline brings
        path, result = validated[data_ref["name"]]
        rows, shown = result.rows, str(path)
    else:  # a workspace version
        text = Path(data_ref["path"]).read_text(encoding="utf-8")
        rows, shown = [json.loads(line) for line in text.splitlines() if line.strip()], data_ref["ref"]
    names = stage.config["reward"]
    try:
        if stage.kind == "grpo":
            resolve_rewards([names] if isinstance(names, str) else names, rows, shown)
        else:
            check_reward(stage.config["reward"], rows[: stage.config.get("max_prompts")], shown)
    except UserError as exc:
        raise UserError(f"{key}.reward{which}: {exc}") from exc


def _relative(ref: str, base_dir: str) -> str:
    """A relative model folder in the YAML is relative to the YAML, like dataset paths."""
    if "@" in ref or Path(ref).is_absolute() or not (ref.startswith(".") or "/" in ref):
        return ref
    return str(Path(base_dir) / ref)


def _topological(stages: list[StageSpec], plans: list[dict]) -> list[tuple[StageSpec, dict]]:
    names = {s.name for s in stages}
    by_name = {s.name: (s, p) for s, p in zip(stages, plans)}
    done: list[str] = []

    def visit(name: str) -> None:
        if name in done:
            return
        for dep in by_name[name][0].upstream(names):
            visit(dep)
        done.append(name)

    for s in stages:
        visit(s.name)
    return [by_name[n] for n in done]


def run_inline(ws: Workspace, submitted: dict[str, Any], *, echo=None, on_event=None) -> dict[str, Any]:
    """Run a submitted pipeline's jobs in this process's worker until none is left.

    Returns the submission with the jobs' final states and the model versions they registered.
    """
    from weightsmith.jobs.queue import list_jobs
    from weightsmith.jobs.worker import Worker
    from weightsmith.workspace.registry import list_versions

    worker = Worker(ws, poll_s=0.2, echo=echo, on_event=on_event)
    worker.run(until_idle=True, pipeline_id=submitted["pipeline"])
    jobs = list_jobs(ws, pipeline_id=submitted["pipeline"])
    job_ids = {j["id"] for j in jobs}
    return {**submitted, "jobs": jobs, "models": [v for v in list_versions(ws) if v["job"] in job_ids]}
