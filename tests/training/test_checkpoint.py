"""The checkpoint picker: only complete checkpoints count; commit marks last; pruning never leaves a fake complete one."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from weightsmith.training.checkpoint import (
    COMPLETE_MARKER,
    NoUsableCheckpoint,
    checkpoint_problem,
    commit_checkpoint,
    complete_checkpoints,
    latest_complete_checkpoint,
    plan_resume,
    prune_checkpoints,
    remove_incomplete_checkpoints,
)

def _zip(path: Path, payload: bytes) -> None:
    """A file in the zip archive format torch.save writes (its content does not matter here)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)


def _trainer_checkpoint(root: Path, step: int) -> Path:
    """What the Trainer leaves behind after a save: every file a resume reads, and the args pickle."""
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    save_file({"w": np.full((16, 16), step, dtype=np.float32)}, str(path / "model.safetensors"))
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    _zip(path / "optimizer.pt", b"optimizer")
    _zip(path / "scheduler.pt", b"scheduler")
    _zip(path / "rng_state.pth", b"rng")
    (path / "training_args.bin").write_bytes(b"pickle")
    return path


def test_commit_marks_complete_and_drops_the_args_pickle(tmp_path: Path):
    path = _trainer_checkpoint(tmp_path, 10)
    assert latest_complete_checkpoint(tmp_path) is None
    commit_checkpoint(path, 10)
    marker = json.loads((path / COMPLETE_MARKER).read_text())
    assert marker["step"] == 10
    assert not (path / "training_args.bin").exists()
    ref = latest_complete_checkpoint(tmp_path)
    assert ref is not None and ref.step == 10 and ref.path == path
    assert not list(path.glob(".*tmp"))


def test_the_marker_lists_every_file_with_its_size_and_sha256(tmp_path: Path):
    path = _trainer_checkpoint(tmp_path, 10)
    (path / "sub").mkdir()
    (path / "sub" / "extra.json").write_text("{}")
    commit_checkpoint(path, 10)
    files = json.loads((path / COMPLETE_MARKER).read_text())["files"]
    expected = ["model.safetensors", "optimizer.pt", "rng_state.pth", "scheduler.pt", "sub/extra.json",
                "trainer_state.json"]
    assert sorted(files) == expected
    for name, entry in files.items():
        data = (path / name).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert checkpoint_problem(path, 10) is None


@pytest.mark.parametrize("missing", ["model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth",
                                     "trainer_state.json"])
def test_commit_refuses_a_checkpoint_without_a_file_resume_needs(tmp_path: Path, missing: str):
    path = _trainer_checkpoint(tmp_path, 5)
    (path / missing).unlink()
    with pytest.raises(RuntimeError, match=missing):
        commit_checkpoint(path, 5)
    assert not (path / COMPLETE_MARKER).exists()


def _committed(root: Path, *steps: int) -> list[Path]:
    paths = [_trainer_checkpoint(root, step) for step in steps]
    for path, step in zip(paths, steps):
        commit_checkpoint(path, step)
    return paths


def test_a_truncated_weights_file_is_passed_over_for_the_previous_checkpoint(tmp_path: Path):
    older, newest = _committed(tmp_path, 40, 60)
    expected = (newest / "model.safetensors").stat().st_size
    with (newest / "model.safetensors").open("r+b") as handle:
        handle.truncate(100)
    plan = plan_resume(tmp_path)
    assert plan.checkpoint.path == older and plan.checkpoint.step == 40
    assert plan.message() == (
        f"checkpoint-60 is unreadable (model.safetensors is 100 bytes, expected {expected}); "
        "resuming from checkpoint-40 (removed checkpoint-60)"
    )
    assert not newest.exists()  # training writes step 60 again; no stale files to mix with
    assert plan_resume(tmp_path).message() is None  # the next resume has nothing to say


def test_a_checkpoint_without_optimizer_and_scheduler_is_passed_over(tmp_path: Path):
    _committed(tmp_path, 40, 60)
    (tmp_path / "checkpoint-60" / "optimizer.pt").unlink()
    (tmp_path / "checkpoint-60" / "scheduler.pt").unlink()
    plan = plan_resume(tmp_path)
    assert plan.checkpoint.step == 40
    assert plan.message() == (
        "checkpoint-60 is incomplete (optimizer.pt, scheduler.pt missing); resuming from checkpoint-40 "
        "(removed checkpoint-60)"
    )


def test_a_file_changed_in_place_is_caught_by_its_hash(tmp_path: Path):
    _committed(tmp_path, 40, 60)
    optimizer = tmp_path / "checkpoint-60" / "optimizer.pt"
    data = bytearray(optimizer.read_bytes())
    data[-1] ^= 0xFF  # same size, one byte different
    optimizer.write_bytes(bytes(data))
    assert checkpoint_problem(tmp_path / "checkpoint-60", 60) == (
        "is unreadable (optimizer.pt changed since the save: its sha256 differs from the marker's)"
    )
    assert plan_resume(tmp_path).checkpoint.step == 40


def test_torn_checkpoints_are_removed_with_a_line_naming_them(tmp_path: Path):
    _committed(tmp_path, 10)
    _trainer_checkpoint(tmp_path, 20)  # killed before its marker
    plan = plan_resume(tmp_path)
    assert plan.checkpoint.step == 10
    assert plan.message() == (
        "checkpoint-20 is incomplete (no completion marker: its save was cut short); resuming from checkpoint-10 "
        "(removed checkpoint-20)"
    )
    only_torn = tmp_path / "fresh"
    _trainer_checkpoint(only_torn, 10)
    plan = plan_resume(only_torn)
    assert plan.checkpoint is None  # nothing was ever committed: the run starts from step 0, as at first
    assert plan.message().endswith("; starting from step 0 (removed checkpoint-10)")
    assert plan_resume(tmp_path / "nope").checkpoint is None


def test_no_usable_checkpoint_is_one_sentence_and_deletes_nothing_committed(tmp_path: Path):
    first, second = _committed(tmp_path, 40, 60)
    (first / "scheduler.pt").unlink()
    with (second / "model.safetensors").open("r+b") as handle:
        handle.truncate(100)
    with pytest.raises(NoUsableCheckpoint) as caught:
        plan_resume(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"no usable checkpoint to resume from in {tmp_path}: checkpoint-60 is unreadable "
                              "(model.safetensors is 100 bytes, expected ")
    assert "; checkpoint-40 is incomplete (scheduler.pt missing); delete that folder" in message
    assert message.count("\n") == 0 and message.endswith("to train again from step 0.")
    assert first.exists() and second.exists()


def test_a_marker_from_before_file_lists_is_checked_by_what_is_on_disk(tmp_path: Path):
    older, newest = _committed(tmp_path, 40, 60)
    for path, step in ((older, 40), (newest, 60)):
        (path / COMPLETE_MARKER).write_text(json.dumps({"step": step}))
    assert checkpoint_problem(newest, 60) is None
    with (newest / "model.safetensors").open("r+b") as handle:
        handle.truncate(100)
    assert checkpoint_problem(newest, 60).startswith("is unreadable (model.safetensors: ")
    (older / "optimizer.pt").write_bytes(b"not an archive")
    assert checkpoint_problem(older, 40) == "is unreadable (optimizer.pt is not the archive torch.save writes)"


def test_latest_ignores_torn_and_mismatched_checkpoints(tmp_path: Path):
    commit_checkpoint(_trainer_checkpoint(tmp_path, 10), 10)
    commit_checkpoint(_trainer_checkpoint(tmp_path, 20), 20)
    _trainer_checkpoint(tmp_path, 30)  # torn: killed before the marker
    half_written = _trainer_checkpoint(tmp_path, 40)
    (half_written / COMPLETE_MARKER).write_text('{"step": 4')  # not valid JSON
    copied = _trainer_checkpoint(tmp_path, 50)
    (copied / COMPLETE_MARKER).write_text(json.dumps({"step": 7}))  # marker of another step
    (tmp_path / "checkpoint-junk").mkdir()
    assert latest_complete_checkpoint(tmp_path).step == 20

    removed = remove_incomplete_checkpoints(tmp_path)
    assert sorted(p.name for p in removed) == ["checkpoint-30", "checkpoint-40", "checkpoint-50"]
    assert [ref.step for ref in complete_checkpoints(tmp_path)] == [10, 20]


def test_steps_sort_numerically_not_as_text(tmp_path: Path):
    for step in (9, 10, 100):
        commit_checkpoint(_trainer_checkpoint(tmp_path, step), step)
    assert latest_complete_checkpoint(tmp_path).step == 100


def test_prune_keeps_the_newest_complete_ones(tmp_path: Path):
    for step in (10, 20, 30):
        commit_checkpoint(_trainer_checkpoint(tmp_path, step), step)
    _trainer_checkpoint(tmp_path, 40)  # an incomplete one does not count towards keep
    prune_checkpoints(tmp_path, keep=2)
    assert [ref.step for ref in complete_checkpoints(tmp_path)] == [20, 30]
    assert not (tmp_path / "checkpoint-10").exists()


def test_missing_directory_has_no_checkpoint(tmp_path: Path):
    assert latest_complete_checkpoint(tmp_path / "nope") is None
    assert remove_incomplete_checkpoints(tmp_path / "nope") == []


def test_a_malformed_marker_makes_the_checkpoint_unreadable_not_a_crash(tmp_path: Path):
    (path,) = _committed(tmp_path, 10)
    (path / COMPLETE_MARKER).write_text(json.dumps({"step": 10, "files": {"model.safetensors": 5}}))
    assert checkpoint_problem(path, 10) == f"is unreadable (its {COMPLETE_MARKER} does not list files with their sizes)"


def test_optimizer_bin_stands_for_optimizer_pt_only_beside_fsdp_weights(tmp_path: Path):
    # optimizer.bin is accelerate's FSDP optimizer state; without pytorch_model_fsdp.bin a resume reads optimizer.pt.
    path = _trainer_checkpoint(tmp_path, 10)
    (path / "optimizer.pt").rename(path / "optimizer.bin")
    with pytest.raises(RuntimeError, match=r"checkpoint-10 lacks optimizer.pt; refusing to mark it complete"):
        commit_checkpoint(path, 10)
    _zip(path / "pytorch_model_fsdp.bin", b"weights")
    commit_checkpoint(path, 10)
    assert latest_complete_checkpoint(tmp_path).step == 10
    # And an FSDP checkpoint needs optimizer.bin: an optimizer.pt beside its weights is not what it resumes.
    fsdp = _trainer_checkpoint(tmp_path, 20)
    _zip(fsdp / "pytorch_model_fsdp.bin", b"weights")
    with pytest.raises(RuntimeError, match=r"checkpoint-20 lacks optimizer.bin; refusing to mark it complete"):
        commit_checkpoint(fsdp, 20)
