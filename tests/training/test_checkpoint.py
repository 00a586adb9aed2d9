"""The checkpoint picker: only complete checkpoints count; commit marks last; pruning never leaves a fake complete one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from weightsmith.training.checkpoint import (
    COMPLETE_MARKER,
    commit_checkpoint,
    complete_checkpoints,
    latest_complete_checkpoint,
    prune_checkpoints,
    remove_incomplete_checkpoints,
)


def _trainer_checkpoint(root: Path, step: int) -> Path:
    """What the Trainer leaves behind after a save (the files that matter to us)."""
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"weights")
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (path / "optimizer.pt").write_bytes(b"optimizer")
    (path / "training_args.bin").write_bytes(b"pickle")
    return path


def test_commit_marks_complete_and_drops_the_args_pickle(tmp_path: Path):
    path = _trainer_checkpoint(tmp_path, 10)
    assert latest_complete_checkpoint(tmp_path) is None
    commit_checkpoint(path, 10)
    assert json.loads((path / COMPLETE_MARKER).read_text()) == {"step": 10}
    assert not (path / "training_args.bin").exists()
    ref = latest_complete_checkpoint(tmp_path)
    assert ref is not None and ref.step == 10 and ref.path == path
    assert not list(path.glob(".*tmp"))


def test_commit_refuses_a_checkpoint_without_weights(tmp_path: Path):
    path = _trainer_checkpoint(tmp_path, 5)
    (path / "model.safetensors").unlink()
    with pytest.raises(RuntimeError):
        commit_checkpoint(path, 5)
    assert not (path / COMPLETE_MARKER).exists()


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
