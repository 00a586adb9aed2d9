"""Interop with EleutherAI's lm-evaluation-harness: one of its tasks as a KPI, stored like any other.

A suite KPI written as ``lm_eval: {task: arc_easy, metric: acc, limit: 200}`` runs the task
on the model version's directory through the harness's Hugging Face backend and keeps the
per-document scores (``log_samples``), so gates can run paired tests on them too.

The harness is an optional extra (``pip install lm-eval``) and most of its tasks download
their datasets from the Hugging Face Hub, so it is checked for before any compute and a
missing install is one clear UserError.
"""

from __future__ import annotations

import math
from typing import Any

from weightsmith.errors import UserError
from weightsmith.evals.suite import Kpi


def require_lm_eval(where: str = "lm_eval"):
    """The ``lm_eval`` module, or a UserError saying how to install it."""
    try:
        import lm_eval
    except ImportError as exc:
        raise UserError(
            f"{where}: lm-evaluation-harness is not installed; install it with 'pip install lm-eval' "
            "(its tasks usually download their datasets, so the first run needs the network)."
        ) from exc
    return lm_eval


def _score(value: Any) -> float | None:
    try:
        score = float(value)
    except (TypeError, ValueError):
        return None  # corpus-level metrics (bleu...) log tuples per document, not a score
    return None if math.isnan(score) else score


def run_lm_eval_kpi(kpi: Kpi, model_path: str, device: str, dtype: str = "auto"):
    """Run the KPI's harness task on ``model_path`` in ``dtype`` (auto: bf16 on a CUDA GPU that supports it,
    else fp32); a :class:`weightsmith.evals.run.KpiOutcome`."""
    from weightsmith.evals.generate import resolve_device, resolve_dtype
    from weightsmith.evals.run import KpiOutcome

    lm_eval = require_lm_eval(f"kpis.{kpi.name}")
    spec = kpi.lm_eval
    device = resolve_device(device)
    try:
        results = lm_eval.simple_evaluate(
            model="hf",
            model_args={"pretrained": model_path, "dtype": resolve_dtype(dtype, device)},
            tasks=[spec.task],
            num_fewshot=spec.num_fewshot,
            limit=spec.limit,
            batch_size=spec.batch_size,
            device=device,
            log_samples=True,
        )
    except (KeyError, ValueError) as exc:
        raise UserError(f"kpis.{kpi.name}.lm_eval: the harness could not run task '{spec.task}' ({exc}).") from exc
    task_results = (results or {}).get("results", {}).get(spec.task)
    key = f"{spec.metric},{spec.filter}"
    if not task_results or key not in task_results:
        known = sorted(k.split(",")[0] for k in (task_results or {}) if "," in k and "_stderr" not in k)
        raise UserError(
            f"kpis.{kpi.name}.lm_eval.metric: task '{spec.task}' reported no '{spec.metric}' (filter "
            f"'{spec.filter}'); it reported: {', '.join(known) or 'nothing'}."
        )
    value = float(task_results[key])
    stderr = _score(task_results.get(f"{spec.metric}_stderr,{spec.filter}"))
    ci = (value - 1.96 * stderr, value + 1.96 * stderr) if stderr is not None else (math.nan, math.nan)
    examples = []
    for position, sample in enumerate(results.get("samples", {}).get(spec.task, [])):
        examples.append({
            "position": int(sample.get("doc_id", position)),
            "prompt": str(sample.get("arguments", ""))[:2000],
            "prediction": str(sample.get("filtered_resps", ""))[:2000],
            "reference": {"target": str(sample.get("target", ""))[:2000]},
            "score": _score(sample.get(spec.metric)),
            "tokens": None,
            "seconds": None,
            "finish_reason": None,
        })
    details = {"task": spec.task, "metric": spec.metric, "filter": spec.filter, "stderr": stderr,
               "version": lm_eval.__dict__.get("__version__")}
    n = len(examples) or int(results.get("n-samples", {}).get(spec.task, {}).get("effective", 0))
    return KpiOutcome(kpi=kpi, value=value, ci=ci, n=n, examples=examples, details=details)
