"""A stage SIGKILLed mid-training and rerun with the same spec resumes and ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers.trainer_pt_utils import safe_globals
from training.training_helpers import (
    PRETRAIN_CONFIG,
    StageRun,
    assert_metrics_rows,
    assert_ok,
    load_weights,
    run_runner,
    run_stage,
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
        marker = json.loads((checkpoint / COMPLETE_MARKER).read_text())
        assert marker["step"] == int(checkpoint.name.split("-")[1])
        assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth"} <= set(marker["files"])
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


# ---------------------------------------------------------------------------------------------
# A checkpoint counts only if it is whole: a damaged newest one is passed over for the one before
# ---------------------------------------------------------------------------------------------

KEEP_ALL = {**PRETRAIN_CONFIG, "keep_checkpoints": 6}  # every checkpoint of the 60 steps stays


@pytest.fixture(scope="module")
def every_checkpoint_run(tmp_path_factory, data_dir: Path, tokenizer_dir: Path) -> StageRun:
    """An uninterrupted run that keeps all its checkpoints: the reference and the source of the damaged copies."""
    run = run_stage(tmp_path_factory.mktemp("keep_all"), "pretrain", KEEP_ALL, _text_inputs(data_dir, tokenizer_dir))
    assert_ok(run)
    return run


def _text_inputs(data_dir: Path, tokenizer_dir: Path) -> dict:
    return {"data_path": data_dir / "text.jsonl", "data_format": "text", "tokenizer_path": tokenizer_dir}


def _killed_after(base: Path, reference: StageRun, steps: tuple[int, ...], inputs: dict) -> Path:
    """The same stage as ``reference``, as a kill right after committing its last checkpoint in ``steps`` left it."""
    spec_path = write_spec(base, "pretrain", KEEP_ALL, inputs)
    for step in steps:
        name = f"checkpoint-{step}"
        shutil.copytree(reference.work_dir / "checkpoints" / name, base / "work" / "checkpoints" / name)
    return spec_path


@pytest.mark.parametrize("damage", ["weights truncated", "optimizer and scheduler deleted"])
def test_a_damaged_newest_checkpoint_resumes_from_the_one_before_with_the_decayed_lr(
    tmp_path: Path, data_dir: Path, tokenizer_dir: Path, every_checkpoint_run: StageRun, damage: str
):
    reference = every_checkpoint_run
    spec_path = _killed_after(tmp_path, reference, (10, 20, 30, 40), _text_inputs(data_dir, tokenizer_dir))
    newest = tmp_path / "work" / "checkpoints" / "checkpoint-40"
    if damage == "weights truncated":
        size = (newest / "model.safetensors").stat().st_size
        with (newest / "model.safetensors").open("r+b") as handle:
            handle.truncate(100)
        why = f"is unreadable (model.safetensors is 100 bytes, expected {size})"
    else:
        (newest / "optimizer.pt").unlink()
        (newest / "scheduler.pt").unlink()
        why = "is incomplete (optimizer.pt, scheduler.pt missing)"

    resumed = StageRun(run_runner(spec_path), tmp_path)
    assert_ok(resumed)
    assert f"checkpoint-40 {why}; resuming from checkpoint-30 (removed checkpoint-40)" in resumed.proc.stderr.splitlines()
    assert resumed.result()["resumed_from_step"] == 30

    # The LR schedule continues where it was at step 30 (cosine decay), not from a fresh warm-up.
    expected = {row["step"]: row["lr"] for row in reference.metrics()}
    rows = resumed.metrics()
    assert rows[0]["step"] == 35
    assert rows[0]["lr"] == pytest.approx(expected[35], rel=1e-9) and rows[0]["lr"] < expected[30]
    assert [row["lr"] for row in rows] == pytest.approx([expected[row["step"]] for row in rows], rel=1e-9)
    # And so do the optimizer's moments: the run ends with the uninterrupted run's weights.
    want, got = load_weights(reference.output_dir), load_weights(resumed.output_dir)
    for name in want:
        assert torch.allclose(want[name], got[name], atol=1e-6), name


def test_no_usable_checkpoint_fails_the_stage_with_one_sentence_and_trains_nothing(
    tmp_path: Path, data_dir: Path, tokenizer_dir: Path, every_checkpoint_run: StageRun
):
    spec_path = _killed_after(tmp_path, every_checkpoint_run, (30, 40), _text_inputs(data_dir, tokenizer_dir))
    checkpoints = tmp_path / "work" / "checkpoints"
    with (checkpoints / "checkpoint-40" / "model.safetensors").open("r+b") as handle:
        handle.truncate(100)
    (checkpoints / "checkpoint-30" / "optimizer.pt").unlink()

    proc = run_runner(spec_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: no usable checkpoint to resume from in {checkpoints}: checkpoint-40 is "
                           "unreadable (model.safetensors is 100 bytes, expected ")
    assert last.endswith("; checkpoint-30 is incomplete (optimizer.pt missing); delete that folder and retry the job "
                         "to train again from step 0.")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "result.json").exists()
    assert sorted(path.name for path in checkpoints.iterdir()) == ["checkpoint-30", "checkpoint-40"]
