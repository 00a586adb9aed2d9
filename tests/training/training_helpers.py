"""Helpers for the training tests: write a stage spec and run the real stage runner in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

# The pretrain run the stage test checks and the resume test kills: long enough (in steps) that a
# kill after the first checkpoint lands well before the end, short enough to take a few seconds.
PRETRAIN_CONFIG = {
    "max_steps": 60,
    "save_steps": 10,
    "logging_steps": 5,
    "batch_size": 4,
    "seq_len": 32,
    "size": "tiny",
    "device": "cpu",
    "keep_checkpoints": 2,
}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@dataclass
class StageRun:
    """One runner invocation: the process and where it wrote."""

    proc: subprocess.CompletedProcess
    base: Path

    @property
    def output_dir(self) -> Path:
        return self.base / "out"

    @property
    def work_dir(self) -> Path:
        return self.base / "work"

    @property
    def metrics_path(self) -> Path:
        return self.base / "metrics.jsonl"

    @property
    def spec_path(self) -> Path:
        return self.base / "spec.json"

    def result(self) -> dict:
        return json.loads((self.base / "result.json").read_text())

    def metrics(self) -> list[dict]:
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines()]

    def trainer_args(self) -> dict:
        """What the library trainer ran with (written by the stage next to result.json)."""
        return json.loads((self.base / "trainer_args.json").read_text())


def stage_context(base: Path, seed: int = 0):
    """The StageContext the runner gives a stage whose files live under ``base``."""
    from weightsmith.training.common import StageContext

    return StageContext(
        work_dir=base / "work",
        output_dir=base / "out",
        seed=seed,
        metrics_path=base / "metrics.jsonl",
        result_path=base / "result.json",
    )


def write_spec(base: Path, kind: str, config: dict, inputs: dict, seed: int = 0) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    spec = {
        "kind": kind,
        "config": config,
        "inputs": {key: (str(value) if isinstance(value, Path) else value) for key, value in inputs.items()},
        **stage_context(base, seed).model_dump(mode="json"),
    }
    path = base / "spec.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    return path


def runner_env(extra_pythonpath: Path | None = None) -> dict:
    paths = [str(SRC)] + ([str(extra_pythonpath)] if extra_pythonpath else [])
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def run_runner(spec_path: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "weightsmith.training.runner", str(spec_path)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or runner_env(),
    )


def run_stage(base: Path, kind: str, config: dict, inputs: dict, env: dict | None = None) -> StageRun:
    """Run one stage through ``python -m weightsmith.training.runner`` (the job system's way)."""
    spec_path = write_spec(base, kind, config, inputs)
    return StageRun(run_runner(spec_path, env=env), base)


def refusal(base: Path, capsys, kind: str, config: dict, inputs: dict) -> str:
    """Run a stage through the runner's entry point, as the job system does (in this process: a refusal
    should cost no model load, and a test no interpreter start); check it exits 2 having written nothing,
    and return its one line on stderr."""
    from weightsmith.training.runner import main

    spec = write_spec(base, kind, config, inputs)
    capsys.readouterr()
    assert main([str(spec)]) == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and message.startswith("error: "), message
    assert not (base / "out").exists() and not (base / "result.json").exists()
    return message.removeprefix("error: ")


def run_in_process(base: Path, capsys, kind: str, config: dict, inputs: dict) -> tuple[dict, str]:
    """Run a stage through the runner's entry point in this process; return its result.json and stage log."""
    from weightsmith.training.runner import main

    spec = write_spec(base, kind, config, inputs)
    capsys.readouterr()
    code = main([str(spec)])
    log = capsys.readouterr().err
    assert code == 0, log[-3000:]
    return json.loads((base / "result.json").read_text()), log


def assert_ok(run: StageRun) -> None:
    assert run.proc.returncode == 0, f"runner exited {run.proc.returncode}:\n{run.proc.stderr[-4000:]}"


METRIC_KEYS = {"step", "loss", "lr", "grad_norm", "tokens_per_sec"}


def assert_metrics_rows(run: StageRun, extra_keys: set[str] = frozenset()) -> list[dict]:
    """Every row carries the common keys with finite numbers; steps strictly increase."""
    import math

    rows = run.metrics()
    assert rows, "no metrics rows were written"
    for row in rows:
        missing = (METRIC_KEYS | set(extra_keys)) - row.keys()
        assert not missing, f"metrics row lacks {missing}: {row}"
        assert all(math.isfinite(row[key]) for key in METRIC_KEYS), row
    steps = [row["step"] for row in rows]
    assert steps == sorted(set(steps))
    return rows


def load_weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def assert_plain_model_dir(model_dir: Path, tokenizer_eos: str = "<|im_end|>"):
    """The output opens with from_pretrained as is, and its config agrees with its tokenizer on eos/pad."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    generation = GenerationConfig.from_pretrained(model_dir)
    assert tokenizer.eos_token == tokenizer_eos
    assert generation.eos_token_id == tokenizer.eos_token_id
    assert generation.pad_token_id == tokenizer.pad_token_id
    assert model.config.vocab_size >= len(tokenizer)
    assert not (model_dir / "adapter_config.json").exists()
    assert not list(model_dir.glob("*.bin")), "the output must hold no pickles"
    return model, tokenizer


def assert_weights_changed(before_dir: Path, after_dir: Path) -> None:
    """Same tensors (a plain model of the same shape), and training moved at least some of them."""
    import torch

    before, after = load_weights(before_dir), load_weights(after_dir)
    assert before.keys() == after.keys()
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert changed, "no parameter changed"
