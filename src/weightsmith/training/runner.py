"""Run one training stage from a spec file: ``python -m weightsmith.training.runner SPEC.json``.

The job system runs every stage this way, as a subprocess. The spec::

    {"kind": "sft", "config": {...}, "inputs": {"data_path", "data_format", "model_path", "tokenizer_path"},
     "work_dir": "...", "output_dir": "...", "seed": 0, "metrics_path": "...", "result_path": "..."}

Under torchrun (``processes`` > 1) every rank runs the stage and rank 0 writes the output, the
metrics and the result. The stage holds ``work_dir``'s lock (:func:`weightsmith.proc.hold_work_lock`)
for its life, so a second stage of the same job waits for it (and fails with a sentence if it waits
too long) instead of writing the same checkpoints. Exit codes: 0 with ``result_path`` written; 2 on
a user mistake (one sentence on stderr, nothing in ``output_dir``); 1 on anything else (traceback on
stderr, then a ``stage failed: …`` line). A rerun with the same spec resumes from the newest
whole checkpoint in ``work_dir/checkpoints`` (:func:`weightsmith.training.checkpoint.plan_resume`).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from weightsmith.errors import UserError
from weightsmith.proc import die_with_parent, hold_work_lock, work_lock_wait_s
from weightsmith.training import STAGE_KINDS, recipe_module, validate_stage_config
from weightsmith.training.common import (
    StageContext, StageInputs, TrainStageConfig, apply_threads, check_device_settings, is_main_process,
    leave_process_group, log_line, write_json_atomically)


class StageSpec(BaseModel):
    """The spec file, as the job system writes it."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(description=f"One of {', '.join(STAGE_KINDS)}.")
    config: dict[str, Any] = Field(default_factory=dict, description="The stage's hyperparameters.")
    inputs: StageInputs = Field(default_factory=StageInputs)
    work_dir: Path
    output_dir: Path
    seed: int = 0
    metrics_path: Path
    result_path: Path


def load_spec(path: Path) -> StageSpec:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise UserError(f"spec file {path} does not exist.") from exc
    except json.JSONDecodeError as exc:
        raise UserError(f"spec file {path} is not valid JSON (line {exc.lineno}: {exc.msg}).") from exc
    try:
        spec = StageSpec.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"])
        raise UserError(f"spec file {path}: '{key}': {error['msg']}.") from exc
    for name in ("work_dir", "output_dir", "metrics_path", "result_path"):
        if not getattr(spec, name).is_absolute():
            raise UserError(f"spec file {path}: '{name}' must be an absolute path, got {getattr(spec, name)}.")
    return spec


def run_spec(spec: StageSpec) -> dict[str, Any]:
    """Validate the stage config, run the recipe and return its result (with kind and output_dir)."""
    cfg = validate_stage_config(spec.kind, spec.config)
    threads = apply_threads(getattr(cfg, "threads", None), spec.kind)
    if isinstance(cfg, TrainStageConfig):  # a device, dtype or optimizer this machine lacks: refused before any data
        check_device_settings(cfg)
    if threads is not None:
        log_line(f"{spec.kind}: computing with {threads} CPU thread(s)")
    ctx = StageContext(
        work_dir=spec.work_dir,
        output_dir=spec.output_dir,
        seed=spec.seed,
        metrics_path=spec.metrics_path,
        result_path=spec.result_path,
    )
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = recipe_module(spec.kind).run(cfg, spec.inputs, ctx)
    return {
        "kind": spec.kind,
        **result,
        "output_dir": str(ctx.output_dir),
        "processes": int(os.environ.get("WORLD_SIZE", "1")),
        "threads": threads,
        "wall_seconds": round(time.perf_counter() - started, 3),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m weightsmith.training.runner SPEC.json", file=sys.stderr)
        return 2
    # Set before transformers/tokenizers load: no hub telemetry, and no tokenizer thread pool that
    # would be forked into dataloader workers.
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # TRL and peft still call this renamed transformers property on every step; the warning is theirs to
    # fix and would fill the job log.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
    if "LOCAL_RANK" in os.environ:  # a rank of weightsmith.training.launch: die with the launcher
        launcher = os.getppid()
        die_with_parent()
        if os.getppid() != launcher:  # it died before we asked
            return 1
    try:
        spec = load_spec(Path(argv[0]))
        if "LOCAL_RANK" not in os.environ:  # under torchrun the launcher holds it for every rank
            hold_work_lock(spec.work_dir, work_lock_wait_s())  # its descriptor stays open until we exit
        result = run_spec(spec)
        if is_main_process():
            write_json_atomically(spec.result_path, result)
        leave_process_group()
    except UserError as exc:
        sys.stderr.write(f"error: {exc}\n")  # one write: the ranks of a launch share the log
        sys.stderr.flush()
        return UserError.exit_code
    except Exception as exc:  # noqa: BLE001 - the job log gets the traceback, the job state gets exit 1
        traceback.print_exc()
        sys.stderr.write(f"stage failed: {type(exc).__name__}: {exc}\n")
        sys.stderr.flush()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
