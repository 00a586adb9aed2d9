"""A stage SIGKILLed mid-training and rerun with the same spec resumes and ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from transformers.trainer_pt_utils import safe_globals
from training.training_helpers import (
    PRETRAIN_CONFIG,
    StageRun,
    assert_metrics_rows,
    assert_ok,
    load_weights,
    run_runner,
    runner_env,
    stage_context,
    write_spec,
)

from weightsmith.training.checkpoint import COMPLETE_MARKER

def _complete_checkpoint_exists(checkpoints: Path) -> bool:
    return checkpoints.is_dir() and any((child / COMPLETE_MARKER).is_file() for child in checkpoints.iterdir())


def _start_and_kill_after_first_checkpoint(spec_path: Path, checkpoints: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "weightsmith.training.runner", str(spec_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=runner_env(),
    )
    try:
        deadline = time.monotonic() + 120
        while not _complete_checkpoint_exists(checkpoints):
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.005)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def test_sigkilled_pretrain_resumes_to_the_same_weights(
    tmp_path: Path, data_dir: Path, tokenizer_dir: Path, pretrain_run: StageRun
):
    uninterrupted = pretrain_run  # the same spec, run once without interruption
    assert_ok(uninterrupted)
    assert uninterrupted.result()["resumed_from_step"] is None

    base = tmp_path / "killed"
    inputs = {"data_path": data_dir / "text.jsonl", "data_format": "text", "tokenizer_path": tokenizer_dir}
    spec_path = write_spec(base, "pretrain", PRETRAIN_CONFIG, inputs)
    checkpoints = base / "work" / "checkpoints"
    _start_and_kill_after_first_checkpoint(spec_path, checkpoints)
    assert not (base / "out").exists() and not (base / "result.json").exists()

    # A checkpoint torn by a crash mid-save (weights half written, no marker) must never be picked.
    torn = checkpoints / "checkpoint-55"
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"\x00" * 64)
    (torn / "trainer_state.json").write_text('{"global_step": 55')

    resumed = StageRun(run_runner(spec_path), base)
    assert_ok(resumed)
    result = resumed.result()
    assert result["resumed_from_step"] is not None and 10 <= result["resumed_from_step"] < PRETRAIN_CONFIG["max_steps"]
    assert result["steps"] == PRETRAIN_CONFIG["max_steps"]
    assert result["train_tokens"] == uninterrupted.result()["train_tokens"]
    assert not torn.exists()

    expected, actual = load_weights(uninterrupted.output_dir), load_weights(resumed.output_dir)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.allclose(expected[name], actual[name], atol=1e-6), name

    # The metrics file reads as one run: every logging step once, in order.
    rows = assert_metrics_rows(resumed)
    assert [row["step"] for row in rows] == list(range(5, PRETRAIN_CONFIG["max_steps"] + 1, 5))

    # Only the newest complete checkpoints are kept; what the Trainer loads back from them is
    # safetensors or opens with torch.load(weights_only=True); the TrainingArguments pickle is gone.
    kept = sorted(checkpoints.iterdir(), key=lambda path: int(path.name.split("-")[1]))
    assert [path.name for path in kept] == ["checkpoint-50", "checkpoint-60"]
    for checkpoint in kept:
        assert json.loads((checkpoint / COMPLETE_MARKER).read_text()) == {"step": int(checkpoint.name.split("-")[1])}
        assert (checkpoint / "model.safetensors").is_file()
        assert not (checkpoint / "training_args.bin").exists()
        pickled = [*checkpoint.glob("*.pt"), *checkpoint.glob("*.pth")]
        assert {path.name for path in pickled} == {"optimizer.pt", "scheduler.pt", "rng_state.pth"}
        for path in pickled:
            with safe_globals():  # numpy RNG state: allow-listed numpy types, still weights_only
                torch.load(path, weights_only=True)


def test_a_run_that_died_saving_its_model_is_restored_not_retrained(
    tmp_path: Path, data_dir: Path, tokenizer_dir: Path
):
    """Killed after the final checkpoint, before the output: the rerun trains no further step."""
    from weightsmith.training import pretrain
    from weightsmith.training.common import StageInputs

    # A constant learning rate, so one extra step would show in the weights.
    cfg = pretrain.Config(
        max_steps=4, save_steps=2, logging_steps=1, batch_size=4, seq_len=32, lr_schedule="constant", device="cpu"
    )
    inputs = StageInputs(data_path=data_dir / "text.jsonl", data_format="text", tokenizer_path=tokenizer_dir)
    ctx = stage_context(tmp_path)
    first = pretrain.run(cfg, inputs, ctx)
    first_weights = load_weights(ctx.output_dir)
    shutil.rmtree(ctx.output_dir)  # as if the process died while writing it

    again = pretrain.run(cfg, inputs, ctx)
    assert again["resumed_from_step"] == 4 and again["steps"] == 4
    assert again["final_loss"] == first["final_loss"] and again["train_tokens"] == first["train_tokens"]
    assert sorted(path.name for path in ctx.checkpoints_dir.iterdir()) == ["checkpoint-2", "checkpoint-4"]
    weights = load_weights(ctx.output_dir)
    assert all(torch.equal(weights[name], first_weights[name]) for name in first_weights)
