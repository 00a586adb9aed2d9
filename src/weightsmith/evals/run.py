"""Run a KPI suite on a model: every example's prompt, prediction, score and timing, stored at the end.

The work happens in three steps so that nothing is recorded half:

1. :func:`prepare_suite` resolves every KPI's dataset and checks that its metric finds the
   columns it needs — all before a model is loaded;
2. :func:`compute_suite` generates (once per dataset and prompt/generation settings, however
   many KPIs score the output), scores and aggregates, in memory;
3. :func:`store_run` writes the run, its KPI results and its examples in one transaction.

:func:`run_suite` does all three; gates (:mod:`weightsmith.evals.gate`) use the steps directly
to store both runs and the verdict together.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from weightsmith.errors import NotFound, UserError
from weightsmith.evals.suite import Kpi, Suite, check_gold, check_metric_inputs, load_suite
from weightsmith.workspace import Workspace
from weightsmith.workspace.models import Dataset, DatasetVersion, EvalExample, EvalKpiResult, EvalRun

log = logging.getLogger(__name__)

CI_RESAMPLES = 2000
STORED_TEXT_CHARS = 2000  # a perplexity example keeps the start of its text; the dataset version has all of it


@dataclass
class KpiData:
    """A KPI's rows and the dataset version they come from (``pending``: a suite file versioned at store time)."""

    name: str
    format: str  # of the dataset: a chat dataset's rows are already prompt rows here (evals.rows)
    hash: str
    rows: list[dict]
    ref: str | None = None
    id: int | None = None
    pending: Any = None  # (path, Validated) for weightsmith.data.ingest.store_validated


@dataclass
class PreparedSuite:
    suite: Suite
    data: dict[str, KpiData]  # by KPI name; lm_eval KPIs have none
    hash: str  # same hash = same KPI definitions on the same data: a stored run can stand in
    warnings: list[str] = field(default_factory=list)  # gold values a metric cannot use as written (check_gold)


@dataclass
class KpiOutcome:
    """A KPI's result on one model, computed or read back from a stored run."""

    kpi: Kpi
    value: float
    ci: tuple[float, float]
    n: int
    examples: list[dict] = field(default_factory=list)  # position, prompt, prediction, reference, score, ...
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def met_target(self) -> bool | None:
        return meets(self.kpi.direction, self.value, self.kpi.target) if self.kpi.target is not None else None

    def scores_by_position(self) -> dict[int, float]:
        return {e["position"]: e["score"] for e in self.examples if e["score"] is not None}


def meets(direction: str, value: float, bound: float) -> bool:
    """``value`` is at least ``bound`` when higher is better, at most when lower is (NaN never meets)."""
    if value is None or math.isnan(value):
        return False
    return value >= bound if direction == "higher" else value <= bound


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


# -- 1. prepare ------------------------------------------------------------------------------
def prepare_suite(ws: Workspace, suite: Suite) -> PreparedSuite:
    """Resolve each KPI's data and check its metric can score it; raises UserError before any compute.

    A chat dataset's conversations become prompt rows here (:func:`weightsmith.evals.rows.chat_as_prompt_rows`);
    its version and hash stay those of the conversations.
    """
    from weightsmith.data.formats import canonical_jsonl, validate
    from weightsmith.data.ingest import InvalidData, resolve_dataset
    from weightsmith.evals.rows import chat_as_prompt_rows, check_slice_column
    from weightsmith.workspace.store import sha256_bytes

    where = suite.source or "suite"
    data: dict[str, KpiData] = {}
    by_path: dict[tuple[str, str], KpiData] = {}
    warnings: list[str] = []
    for kpi in suite.kpis.values():
        key = f"{where}: kpis.{kpi.name}"
        if kpi.kind == "lm_eval":
            from weightsmith.evals.lm_eval import require_lm_eval

            require_lm_eval(key)
            continue
        accepted = ("text",) if kpi.kind == "perplexity" else ("prompt", "chat")
        if kpi.path is not None:
            if (kpi.path, kpi.format) not in by_path:
                result = validate(kpi.path, kpi.format)
                if not result.ok():
                    raise InvalidData(result.errors, Path(kpi.path))
                _check_dataset_name_free(ws, kpi.dataset_name, kpi.format, key)
                clash = next((d for d in by_path.values() if d.name == kpi.dataset_name and d.format != kpi.format), None)
                if clash is not None:
                    raise UserError(
                        f"{key}.path: another KPI versions {clash.format} data as dataset '{kpi.dataset_name}'; "
                        "set dataset_name: to tell them apart."
                    )
                rows = chat_as_prompt_rows(result.rows, kpi.path, key) if kpi.format == "chat" else result.rows
                by_path[(kpi.path, kpi.format)] = KpiData(
                    name=kpi.dataset_name, format=kpi.format, hash=sha256_bytes(canonical_jsonl(result.rows)),
                    rows=rows, pending=(Path(kpi.path), result),
                )
            found = by_path[(kpi.path, kpi.format)]
        else:
            try:
                dv = resolve_dataset(ws, kpi.data)
            except UserError as exc:
                raise UserError(f"{key}.data: {exc}") from exc
            if dv["format"] not in accepted:
                shape = ("text documents" if kpi.kind == "perplexity" else
                         'prompt rows {"prompt": ..., <columns it scores against>} or chat rows {"messages": [...]}')
                raise UserError(
                    f"{key}.data: {dv['ref']} holds {dv['format']} data, but metric '{kpi.metric}' reads "
                    f"{' or '.join(accepted)} data ({shape}); name a {' or '.join(accepted)} dataset."
                )
            rows = [json.loads(line) for line in Path(dv["path"]).read_text(encoding="utf-8").splitlines() if line.strip()]
            if dv["format"] == "chat":
                rows = chat_as_prompt_rows(rows, dv["ref"], key)
            found = KpiData(name=dv["name"], format=dv["format"], hash=dv["hash"], rows=rows, ref=dv["ref"], id=dv["id"])
        if kpi.limit is not None:
            found = KpiData(**{**found.__dict__, "rows": found.rows[: kpi.limit]})
        if not found.rows:
            raise UserError(f"{key}: its dataset has no rows to evaluate.")
        check_slice_column(kpi, found.rows, found.ref or found.name, key, chat=found.format == "chat")
        if kpi.kind == "generate":
            check_metric_inputs(kpi, found.rows, found.ref or found.name, key, chat=found.format == "chat")
            for warning in check_gold(kpi, found.rows, key):
                log.warning("warning: %s", warning)
                warnings.append(warning)
            _render_all(kpi, found.rows, key)  # a template that does not fit the rows fails now, not after generating
        data[kpi.name] = found
    return PreparedSuite(suite=suite, data=data, hash=suite_hash(suite, data), warnings=warnings)


def suite_hash(suite: Suite, data: dict[str, KpiData]) -> str:
    """The KPI definitions and their datasets' contents; not the suite's name, file, device or gate rules.

    Gate settings (max_regression, alpha) do not change what is measured, so changing them
    keeps stored runs reusable.
    """
    kpis = {}
    for name, kpi in sorted(suite.kpis.items()):
        # slice_by only groups the stored examples: a run made before a KPI was sliced still stands in.
        spec = kpi.model_dump(mode="json", exclude={"description", "data", "path", "dataset_name", "format", "gate",
                                                    "slice_by"})
        spec["data"] = data[name].hash if name in data else None
        kpis[name] = spec
    return hashlib.sha256(json.dumps(kpis, sort_keys=True).encode()).hexdigest()


def _check_dataset_name_free(ws: Workspace, name: str, fmt: str, key: str) -> None:
    from sqlalchemy import select

    with ws.session() as s:
        existing = s.scalar(select(Dataset).where(Dataset.project_id == ws.project_id, Dataset.name == name))
        if existing is not None and existing.format != fmt:
            raise UserError(
                f"{key}.path: it would be versioned as dataset '{name}', which holds {existing.format} data; "
                "set dataset_name: to another name."
            )


# -- 2. compute ------------------------------------------------------------------------------
def render_prompt(row: dict, kpi: Kpi) -> str | list[dict]:
    """What the model sees for one row: the prompt, the KPI's template applied, its system message added."""
    spec = kpi.prompt
    prompt = row["prompt"]
    if isinstance(prompt, str):
        text = spec.template.format(**row) if spec.template else prompt
        if not (spec.chat or spec.system):
            return text
        messages = [{"role": "user", "content": text}]
    else:
        messages = [dict(m) for m in prompt]
        if spec.template:
            last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
            if last_user is not None:
                values = {**row, "prompt": messages[last_user].get("content", "")}
                messages[last_user]["content"] = spec.template.format(**values)
    if spec.system and not (messages and messages[0].get("role") == "system"):
        messages.insert(0, {"role": "system", "content": spec.system})
    return messages


def _render_all(kpi: Kpi, rows: list[dict], key: str) -> list:
    rendered = []
    for index, row in enumerate(rows):
        try:
            rendered.append(render_prompt(row, kpi))
        except (KeyError, IndexError, ValueError) as exc:
            raise UserError(
                f"{key}.prompt.template: row {index + 1} cannot fill it ({type(exc).__name__}: {exc}); "
                f"the row has columns {', '.join(sorted(row))}."
            ) from exc
    return rendered


def compute_suite(
    prepared: PreparedSuite, model_path: str, *, device: str | None = None, dtype: str | None = None
) -> list[KpiOutcome]:
    """Every KPI of the suite on the model at ``model_path``, in memory (nothing is written).

    ``device`` and ``dtype`` override the suite's (the precision the model is loaded and run in).
    """
    device = device or prepared.suite.device
    dtype = dtype or prepared.suite.dtype
    generations: dict[str, tuple[list, list, float]] = {}  # generation shared by KPIs with the same inputs
    outcomes = []
    for kpi in prepared.suite.kpis.values():
        started = time.perf_counter()
        if kpi.kind == "lm_eval":
            from weightsmith.evals.lm_eval import run_lm_eval_kpi

            outcome = run_lm_eval_kpi(kpi, model_path, device, dtype)
        elif kpi.kind == "perplexity":
            outcome = _perplexity_kpi(kpi, prepared.data[kpi.name], model_path, device, dtype)
        else:
            outcome = _generation_kpi(
                kpi, prepared.data[kpi.name], model_path, device, generations, prepared.suite, dtype
            )
        outcome.seconds = time.perf_counter() - started + outcome.details.get("shared_generation_s", 0.0)
        outcomes.append(outcome)
    return outcomes


def _generation_kpi(
    kpi: Kpi, data: KpiData, model_path: str, device: str, cache: dict, suite: Suite, dtype: str = "auto"
) -> KpiOutcome:
    from weightsmith.evals.generate import generate

    where = f"{suite.source or 'suite'}: kpis.{kpi.name}"
    group = json.dumps([data.hash, kpi.limit, kpi.prompt.model_dump(), kpi.generation.model_dump()], sort_keys=True)
    shared = group in cache
    if not shared:
        prompts = _render_all(kpi, data.rows, where)
        started = time.perf_counter()
        try:  # each row's tools are rendered with its prompt, as in training
            outputs = generate(model_path, prompts, device=device, dtype=dtype,
                               tools=[row.get("tools") for row in data.rows], **kpi.generation.model_dump())
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from exc
        cache[group] = (prompts, outputs, time.perf_counter() - started)
    prompts, outputs, generation_s = cache[group]
    completions = [g.text for g in outputs]
    if kpi.metric == "latency":
        scores = [g.seconds for g in outputs]
    else:
        scores = _score(kpi, completions, prompts, data.rows, where)
    examples = [
        {
            "position": i,
            "prompt": prompt,
            "prediction": g.text,
            "reference": {k: v for k, v in row.items() if k != "prompt"},
            "score": score,
            "tokens": g.tokens,
            "seconds": g.seconds,
            "finish_reason": g.finish_reason,
        }
        for i, (prompt, g, row, score) in enumerate(zip(prompts, outputs, data.rows, scores, strict=True))
    ]
    value, ci = aggregate(kpi, np.asarray(scores, dtype=float))
    details = {"generation_s": round(generation_s, 4), "tokens": sum(g.tokens for g in outputs)}
    if shared:
        details["generation_shared"] = True  # timed under the KPI that generated first
    return KpiOutcome(kpi=kpi, value=value, ci=ci, n=len(scores), examples=examples, details=details)


def _score(kpi: Kpi, completions: list[str], prompts: list, rows: list[dict], where: str) -> list[float]:
    from weightsmith.rewards import get_reward
    from weightsmith.rewards.contract import call_reward

    fn = get_reward(kpi.metric)
    n = len(completions)
    columns: dict[str, Any] = {}
    for row in rows:
        for column in row:
            if column != "prompt" and column not in columns:
                columns[column] = [r.get(column) for r in rows]
    columns.update({name: [value] * n for name, value in kpi.columns.items()})
    options = dict(kpi.options)
    if "api_key_env" in options:  # the key itself stays out of the suite file and the database
        options["api_key"] = os.environ.get(str(options.pop("api_key_env")))
    try:
        raw = call_reward(fn, completions, prompts, {**columns, **options})
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from exc
    except Exception as exc:
        if ":" not in kpi.metric:
            raise  # a bug in a shipped metric is ours: let it show as one
        raise UserError(f"{where}: metric '{kpi.metric}' raised {type(exc).__name__}: {exc}") from exc
    try:
        scores = [float(s) for s in raw]
    except (TypeError, ValueError) as exc:
        raise UserError(f"{where}: metric '{kpi.metric}' must return a list of numbers, one per completion.") from exc
    if len(scores) != n:
        raise UserError(f"{where}: metric '{kpi.metric}' returned {len(scores)} scores for {n} completions.")
    bad = [i + 1 for i, s in enumerate(scores) if not math.isfinite(s)]
    if bad:
        raise UserError(f"{where}: metric '{kpi.metric}' gave no finite score for rows {', '.join(map(str, bad[:10]))}.")
    return scores


def _perplexity_kpi(kpi: Kpi, data: KpiData, model_path: str, device: str, dtype: str = "auto") -> KpiOutcome:
    from weightsmith.evals.generate import load_model, perplexity

    texts = [row["text"] for row in data.rows]
    result = perplexity(model_path, texts, seq_len=kpi.seq_len, batch_size=kpi.generation.batch_size, device=device,
                        dtype=dtype)
    _, tokenizer = load_model(model_path, device, dtype)
    # Every token after a text's first is predicted once (perplexity's windows overlap by one).
    tokens = [max(len(tokenizer(t, add_special_tokens=True, verbose=False)["input_ids"]) - 1, 0) for t in texts]
    nll = result["nll_per_token"]
    examples = [
        {
            "position": i,
            "prompt": text[:STORED_TEXT_CHARS],
            "prediction": None,
            "reference": {k: v for k, v in row.items() if k != "text"},
            "score": None if math.isnan(score) else score,  # mean NLL per token of this text
            "tokens": count,
            "seconds": None,
            "finish_reason": None,
        }
        for i, (text, row, score, count) in enumerate(zip(texts, data.rows, nll, tokens, strict=True))
    ]
    kept = [(e["score"], e["tokens"]) for e in examples if e["score"] is not None]
    if not kept:
        raise UserError(f"kpis.{kpi.name}: every text is too short to score (a text needs at least two tokens).")
    scores, weights = (np.asarray(x, dtype=float) for x in zip(*kept))
    value, ci = aggregate(kpi, scores, weights=weights)
    details = {"tokens": int(weights.sum()), "skipped_short_texts": len(examples) - len(kept)}
    return KpiOutcome(kpi=kpi, value=value, ci=ci, n=len(kept), examples=examples, details=details)


def aggregate(kpi: Kpi, scores: np.ndarray, *, weights: np.ndarray | None = None) -> tuple[float, tuple[float, float]]:
    """The KPI's value from per-example scores, and a 95% confidence interval around it.

    ``mean`` and ``pass_rate`` use :func:`weightsmith.evals.stats.mean_ci` (Wilson for pass/fail);
    quantiles and perplexity a seeded percentile bootstrap over the examples. Perplexity is
    the corpus perplexity ``exp(sum(nll_i * tokens_i) / sum(tokens_i))`` (``weights`` = tokens).
    """
    from scipy import stats as scipy_stats

    from weightsmith.evals.stats import mean_ci

    how = kpi.aggregate
    if how == "mean":
        return mean_ci(scores)
    if how == "pass_rate":
        return mean_ci((scores >= kpi.pass_threshold).astype(float))
    if how == "perplexity":
        def statistic(nll, tokens, axis=-1):
            return np.exp((nll * tokens).sum(axis=axis) / tokens.sum(axis=axis))

        samples, value = (scores, weights), float(statistic(scores, weights))
    else:
        q = {"median": 0.5, "p90": 0.9, "p95": 0.95}[how]

        def statistic(x, axis=-1):
            return np.quantile(x, q, axis=axis)

        samples, value = (scores,), float(statistic(scores))
    if scores.size < 2:
        return value, (math.nan, math.nan)
    result = scipy_stats.bootstrap(
        samples, statistic, paired=True, vectorized=True, method="percentile",
        n_resamples=CI_RESAMPLES, rng=np.random.default_rng(0),
    )
    return value, (float(result.confidence_interval.low), float(result.confidence_interval.high))


# -- 3. store --------------------------------------------------------------------------------
def store_pending_datasets(ws: Workspace, prepared: PreparedSuite) -> None:
    """Version the suite's own data files (content-addressed: the same file gives the same version)."""
    from weightsmith.data.ingest import store_validated

    stored: dict[int, dict] = {}
    for data in prepared.data.values():
        if data.pending is not None and data.id is None:
            if id(data.pending) not in stored:
                path, validated = data.pending
                stored[id(data.pending)] = store_validated(ws, data.name, path, validated, {"suite": prepared.suite.name})
            data.id, data.ref = stored[id(data.pending)]["id"], stored[id(data.pending)]["ref"]


def store_run(
    s, ws: Workspace, prepared: PreparedSuite, outcomes: list[KpiOutcome], model: dict, *,
    started_at: datetime, seconds: float, device: str,
) -> EvalRun:
    """Add the run, its KPI results and every example to session ``s`` (the caller's transaction)."""
    run = EvalRun(
        project_id=ws.project_id, suite_name=prepared.suite.name, suite_hash=prepared.hash,
        suite=prepared.suite.model_dump(mode="json"), source=prepared.suite.source,
        model_version_id=model.get("id"), model_ref=model["ref"], device=device, seconds=seconds,
        started_at=started_at, finished_at=utcnow(),
    )
    s.add(run)
    s.flush()
    for outcome in outcomes:
        data = prepared.data.get(outcome.kpi.name)
        s.add(EvalKpiResult(
            run_id=run.id, kpi=outcome.kpi.name, metric=outcome.kpi.metric, aggregate=outcome.kpi.aggregate,
            direction=outcome.kpi.direction, retention=outcome.kpi.retention,
            dataset_version_id=data.id if data else None, value=_finite(outcome.value),
            ci_low=_finite(outcome.ci[0]), ci_high=_finite(outcome.ci[1]), n=outcome.n, target=outcome.kpi.target,
            met_target=outcome.met_target, seconds=outcome.seconds, details=outcome.details,
        ))
        s.add_all(EvalExample(run_id=run.id, kpi=outcome.kpi.name, **example) for example in outcome.examples)
    s.flush()
    return run


def _finite(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


# -- reading back --------------------------------------------------------------------------------
def load_outcomes(s, run: EvalRun) -> list[KpiOutcome]:
    """A stored run's KPI outcomes with their examples (for gates over a reused run, and reports)."""
    from sqlalchemy import select

    suite = Suite.model_validate(run.suite)
    examples: dict[str, list[dict]] = {}
    for e in s.scalars(select(EvalExample).where(EvalExample.run_id == run.id).order_by(EvalExample.kpi, EvalExample.position)):
        examples.setdefault(e.kpi, []).append({
            "position": e.position, "prompt": e.prompt, "prediction": e.prediction, "reference": e.reference,
            "score": e.score, "tokens": e.tokens, "seconds": e.seconds, "finish_reason": e.finish_reason,
        })
    outcomes = []
    for r in s.scalars(select(EvalKpiResult).where(EvalKpiResult.run_id == run.id).order_by(EvalKpiResult.id)):
        nan = math.nan
        outcomes.append(KpiOutcome(
            kpi=suite.kpis[r.kpi], value=nan if r.value is None else r.value,
            ci=(nan if r.ci_low is None else r.ci_low, nan if r.ci_high is None else r.ci_high), n=r.n,
            examples=examples.get(r.kpi, []), seconds=r.seconds, details=r.details,
        ))
    return outcomes


def reusable_run(s, ws: Workspace, suite_hash_: str, model_version_id: int) -> EvalRun | None:
    """The newest stored run of the same suite (same definitions, same data) on the same version."""
    from sqlalchemy import select

    return s.scalar(
        select(EvalRun)
        .where(EvalRun.project_id == ws.project_id, EvalRun.suite_hash == suite_hash_, EvalRun.model_version_id == model_version_id)
        .order_by(EvalRun.id.desc())
        .limit(1)
    )


def kpi_summary(outcome: KpiOutcome, dataset_ref: str | None = None) -> dict[str, Any]:
    """A KPI's result as the run's document shows it; a sliced KPI adds ``slice_by`` and ``slices``."""
    from weightsmith.evals.rows import slice_values

    kpi = outcome.kpi
    sliced = {"slice_by": kpi.slice_by, "slices": slice_values(outcome)} if kpi.slice_by else {}
    return {
        "value": _finite(outcome.value),
        "ci": [_finite(outcome.ci[0]), _finite(outcome.ci[1])],
        "n": outcome.n,
        "metric": kpi.metric,
        "aggregate": kpi.aggregate,
        "direction": kpi.direction,
        "target": kpi.target,
        "met_target": outcome.met_target,
        "retention": kpi.retention,
        "dataset": dataset_ref,
        "seconds": round(outcome.seconds, 4),
        **sliced,
    }


def run_dict(s, run: EvalRun, outcomes: list[KpiOutcome] | None = None) -> dict[str, Any]:
    """``{"run", "model", "suite", "kpis": {name: {"value", "ci", "n", ...}}, ...}``."""
    from sqlalchemy import select

    outcomes = outcomes if outcomes is not None else load_outcomes(s, run)
    datasets = {
        r.kpi: f"{dv.dataset.name}@v{dv.version}"
        for r, dv in s.execute(
            select(EvalKpiResult, DatasetVersion)
            .join(DatasetVersion, EvalKpiResult.dataset_version_id == DatasetVersion.id)
            .where(EvalKpiResult.run_id == run.id)
        ).all()
    }
    return {
        "run": run.id,
        "model": run.model_ref,
        "suite": run.suite_name,
        "suite_hash": run.suite_hash,
        "source": run.source,
        "device": run.device,
        "seconds": round(run.seconds, 3),
        "created_at": run.finished_at.isoformat(timespec="seconds") + "Z",
        "kpis": {o.kpi.name: kpi_summary(o, datasets.get(o.kpi.name)) for o in outcomes},
    }


def get_run(ws: Workspace, run_id: int) -> EvalRun:
    with ws.session() as s:
        run = s.get(EvalRun, run_id)
        if run is None or run.project_id != ws.project_id:
            raise NotFound(f"no eval run {run_id}; 'weightsmith eval history MODEL' lists a model's runs.")
        return run


# -- the verb ------------------------------------------------------------------------------------
def evaluate(ws: Workspace, prepared: PreparedSuite, model: dict, device: str | None) -> tuple[list[KpiOutcome], dict]:
    """Compute a prepared suite on a resolved model; returns the outcomes and what :func:`store_run` needs."""
    started_at, t0 = utcnow(), time.perf_counter()
    outcomes = compute_suite(prepared, model["path"], device=device)
    return outcomes, {"started_at": started_at, "seconds": time.perf_counter() - t0, "device": device or prepared.suite.device}


def run_suite(
    ws: Workspace,
    suite_path_or_spec: str | Path | dict | Suite,
    model_ref: str,
    *,
    device: str | None = None,
    on_start: Callable[[], None] | None = None,
) -> dict:
    """Run a KPI suite on a model version and store every example; returns :func:`run_dict`'s document.

    Args:
        suite_path_or_spec: a suite YAML path, a parsed mapping, or a loaded :class:`Suite`.
        model_ref: ``NAME@vN``, ``NAME@ALIAS``, ``NAME`` (newest) or a local model directory.
        device: overrides the suite's ``device`` (auto | cpu | cuda...).
        on_start: called once the suite, its data and the model have been checked, before any
            generation (the CLI's "Evaluating ..." line, so a refused suite never shows it).
    """
    from weightsmith.workspace.registry import resolve_model

    suite = load_suite(suite_path_or_spec)
    model = resolve_model(ws, model_ref)
    prepared = prepare_suite(ws, suite)
    if on_start is not None:
        on_start()
    outcomes, timing = evaluate(ws, prepared, model, device)
    store_pending_datasets(ws, prepared)
    with ws.session() as s:
        run = store_run(s, ws, prepared, outcomes, model, **timing)
        doc = run_dict(s, run, outcomes)
    if prepared.warnings:
        doc["warnings"] = prepared.warnings
    return doc
