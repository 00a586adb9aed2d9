"""Pipeline stages that end a pipeline the way an organization's policy wants: ``gate`` then ``promote``.

    gate:
      kind: gate
      model: grpo                 # the candidate: a stage of this pipeline (or NAME@vN)
      suite: suite.yaml           # relative to the pipeline YAML
      baseline: champion          # an alias of the pipeline's model (or NAME@vN); floors only while it is unset
    promote:
      kind: promote
      model: grpo
      after: [gate]
      alias: champion             # refused unless a passing gate allows it, like `weightsmith models promote`

An ``eval`` stage (``kind: eval``, ``model``, ``suite``) runs a KPI suite on a stage's model and
stores the run, so a pipeline can measure each stage; the service starts eval and gate jobs of
its own the same way (``evals.start`` / ``gates.start``), with the suite inline.

They run inside the worker (they are database work plus an evaluation), and record what they
did on the job's run like any stage. A gate that refuses fails its job, so the promote stage
waiting on it is cancelled with the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from weightsmith.errors import UserError, shorten


class GateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    suite: str = Field(description="KPI suite YAML, relative to the pipeline YAML.")
    baseline: str | None = Field("champion", description="Alias of this pipeline's model, or NAME@vN; null: floors only.")
    device: str | None = Field(None, description="Overrides the suite's device.")


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    suite: str = Field(description="KPI suite YAML, relative to the pipeline YAML.")
    device: str | None = Field(None, description="Overrides the suite's device.")


class PromoteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alias: str = Field("champion", description="The alias to move to the stage's model version.")


CONFIGS: dict[str, type[BaseModel]] = {"eval": EvalConfig, "gate": GateConfig, "promote": PromoteConfig}


class GateRefusedError(Exception):
    """The gate ran and refused the candidate: its job fails and its dependants are cancelled.

    ``result`` is the verdict, which the job's run keeps (the refusal is the job's error sentence).
    """

    def __init__(self, message: str, result: dict[str, Any] | None = None):
        super().__init__(message)
        self.result = result or {}


def resolve_suite_path(suite: str, base_dir: str) -> str:
    """Check the suite before anything is queued: it exists and every KPI key is valid."""
    from weightsmith.evals.suite import load_suite

    path = Path(suite) if Path(suite).is_absolute() else Path(base_dir) / suite
    load_suite(path)
    return str(path.resolve())


def run_in_worker(ws, kind: str, payload: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """Run an eval, gate or promote job; return its result (what the job's run records).

    The suite is ``payload["suite"]`` (a mapping: an eval or gate started through the service) or
    ``payload["suite_path"]`` (a pipeline's stage). An eval's result is the stored run (``run``,
    ``kpis``); a gate's is its verdict (``gate``, ``passed``, ``rules``), and a refusal fails the job.
    """
    candidate = (inputs.get("model") or {}).get("ref")
    if not candidate or "@" not in candidate:
        raise UserError(f"a {kind} stage needs a registered model version, got {shorten(candidate)}.")
    config = CONFIGS[kind].model_validate(payload["config"])
    suite = payload.get("suite") or payload.get("suite_path")
    if kind == "eval":
        from weightsmith.evals.run import run_suite

        evaluated = run_suite(ws, suite, candidate, device=config.device)
        return {k: evaluated.get(k) for k in ("run", "model", "suite", "seconds", "kpis")}
    if kind == "gate":
        from weightsmith.evals.gate import run_gate

        baseline = config.baseline
        if baseline and "@" not in baseline:
            baseline = f"{payload['model_name']}@{baseline}"
        verdict = run_gate(ws, suite, candidate, baseline, device=config.device)
        result = {k: verdict.get(k) for k in ("gate", "passed", "candidate", "baseline", "note", "rules")}
        if not verdict["passed"]:
            failed = [r for r in verdict["rules"] if not r["passed"]]
            reasons = "; ".join(f"{r['kpi']} {r['rule']}" for r in failed[:3])
            raise GateRefusedError(f"gate {verdict['gate']} refused {candidate}: {reasons}", result)
        return result
    from weightsmith.workspace.aliases import promote

    moved = promote(ws, candidate, config.alias, reason=f"pipeline {payload.get('pipeline_id')} stage '{payload['stage']}'",
                    actor=payload.get("actor"))
    return {k: moved.get(k) for k in ("model", "alias", "version", "previous", "moved", "gate")}
