"""Checkpoint format: which checkpoint directories count as complete, and how one becomes complete.

The HF Trainer writes ``checkpoint-<step>/`` into ``work_dir/checkpoints``: model weights as
safetensors (``model.safetensors``, or ``adapter_model.safetensors`` for LoRA), the optimizer
(``optimizer.pt``), LR scheduler (``scheduler.pt``), RNG states (``rng_state.pth``) and
``trainer_state.json``. It loads the ``.pt``/``.pth`` files back only with
``torch.load(..., weights_only=True)`` (transformers 5.24, ``Trainer._load_*``), so resuming
never unpickles arbitrary objects; it also writes ``training_args.bin``, a full pickle that
nothing loads back, which we delete.

The Trainer writes those files in place, one after the other, so a process killed mid-save
leaves a torn directory. We make completeness explicit: after the Trainer returns from a save,
:func:`commit_checkpoint` flushes the files to disk and then writes a marker file via
tmp-file + ``os.replace`` — written last, atomically. The resume picker only ever considers
directories that carry a valid marker. Pure stdlib, cheap to import.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

COMPLETE_MARKER = "weightsmith_complete.json"
_CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")
# What the Trainer must have written for a checkpoint to be resumable (one weights file suffices).
_WEIGHTS_FILES = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors")
_STATE_FILE = "trainer_state.json"
# A pickle of the TrainingArguments that nothing loads back; we keep no pickles around.
_UNUSED_PICKLES = ("training_args.bin",)


@dataclass(frozen=True)
class CheckpointRef:
    """A complete checkpoint: its directory and global step."""

    path: Path
    step: int


def _checkpoint_dirs(checkpoints_dir: Path) -> list[tuple[int, Path]]:
    if not checkpoints_dir.is_dir():
        return []
    found = []
    for child in checkpoints_dir.iterdir():
        match = _CHECKPOINT_DIR.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return sorted(found)


def is_complete(path: Path, step: int | None = None) -> bool:
    """True when ``path`` carries a valid completion marker (for ``step``, when given)."""
    try:
        marker = json.loads((path / COMPLETE_MARKER).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(marker, dict) and (step is None or marker.get("step") == step)


def complete_checkpoints(checkpoints_dir: Path) -> list[CheckpointRef]:
    """All complete checkpoints under ``checkpoints_dir``, oldest first."""
    return [CheckpointRef(path, step) for step, path in _checkpoint_dirs(Path(checkpoints_dir)) if is_complete(path, step)]


def latest_complete_checkpoint(checkpoints_dir: Path) -> CheckpointRef | None:
    """The complete checkpoint with the highest step, or None when there is none to resume from."""
    complete = complete_checkpoints(checkpoints_dir)
    return complete[-1] if complete else None


def remove_incomplete_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Delete torn checkpoint directories (no valid marker) so a later save cannot mix with their files."""
    removed = []
    for step, path in _checkpoint_dirs(Path(checkpoints_dir)):
        if not is_complete(path, step):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_checkpoint(path: Path, step: int) -> None:
    """Mark the checkpoint the Trainer just finished writing as complete.

    Raises:
        RuntimeError: when the Trainer did not leave weights and trainer state in ``path`` — a
            checkpoint we cannot resume from must not be marked complete.
    """
    path = Path(path)
    if not any((path / name).is_file() for name in _WEIGHTS_FILES) or not (path / _STATE_FILE).is_file():
        raise RuntimeError(f"checkpoint {path} lacks weights or {_STATE_FILE}; refusing to mark it complete")
    for name in _UNUSED_PICKLES:
        (path / name).unlink(missing_ok=True)
    # Flush what the Trainer wrote before the marker claims it is there (a crash of the machine,
    # not only of the process, must not leave a marked checkpoint with missing bytes).
    for file in path.rglob("*"):
        if file.is_file():
            _fsync_path(file)
    tmp = path / f".{COMPLETE_MARKER}.tmp"
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump({"step": step}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path / COMPLETE_MARKER)
    _fsync_path(path)


def prune_checkpoints(checkpoints_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` complete checkpoints."""
    for ref in complete_checkpoints(Path(checkpoints_dir))[:-keep] if keep > 0 else []:
        # Unmark first: a deletion cut short must leave an incomplete directory, not a complete-looking one.
        (ref.path / COMPLETE_MARKER).unlink(missing_ok=True)
        shutil.rmtree(ref.path, ignore_errors=True)
