"""Checkpoint format: which checkpoint directories count as complete, and how one becomes complete.

The HF Trainer writes ``checkpoint-<step>/`` into ``work_dir/checkpoints``: model weights as
safetensors (``model.safetensors``, or ``adapter_model.safetensors`` for LoRA), the optimizer
(``optimizer.pt``), LR scheduler (``scheduler.pt``), RNG states (``rng_state.pth``, one
``rng_state_<rank>.pth`` per rank under torchrun) and ``trainer_state.json``. It loads the
``.pt``/``.pth`` files back only with ``torch.load(..., weights_only=True)`` (transformers 5.24,
``Trainer._load_*``), so resuming never unpickles arbitrary objects, and we load none ourselves;
it also writes ``training_args.bin``, a full pickle that nothing loads back, which we delete.
Under ``distributed: fsdp`` the optimizer state is ``optimizer.bin`` (the gathered state, rank 0
writes it) and the weights are also in ``pytorch_model_fsdp.bin``, the file the FSDP resume reads
(accelerate's ``load_fsdp_*``, also ``weights_only=True``).

The Trainer writes those files in place, one after the other, so a process killed mid-save
leaves a torn directory. We make completeness explicit: after the Trainer returns from a save,
:func:`commit_checkpoint` flushes the files to disk and then writes a marker file via
tmp-file + ``os.replace`` — written last, atomically. The marker lists every file of the
checkpoint with its size and sha256, so a checkpoint damaged *after* it was committed (a file
truncated, deleted or overwritten) is told apart from a whole one: :func:`plan_resume` checks the
newest checkpoints against their markers and resumes from the newest one that is whole.

A missing ``optimizer.pt``/``scheduler.pt`` is the damage that matters most: the Trainer resumes
without them silently, with a fresh optimizer and the LR schedule restarted from warm-up.

Hashing costs a read of every file at each save (from the page cache, right after the write) and
at resume: sha256 runs at ~1.2 GB/s a core, and the files are hashed in parallel. Measured on two
busy CPU cores: a 4.7M-parameter model's checkpoint (57 MB with its optimizer) commits in 0.2 s
(fsync included) and verifies in 0.1 s; 3 GB (a ~250M-parameter model in fp32) in 4.8 s and 4.3 s.
Pure stdlib plus safetensors' header reader.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from weightsmith.errors import UserError

COMPLETE_MARKER = "weightsmith_complete.json"
_CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")
# What the Trainer must have written for a checkpoint to be resumable (one weights file suffices).
_WEIGHTS_FILES = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors")
_STATE_FILE = "trainer_state.json"
# Without these the Trainer resumes anyway, silently, with a fresh optimizer and LR schedule.
_OPTIMIZER_FILES = ("optimizer.pt", "scheduler.pt")
# Under FSDP (FULL_STATE_DICT) accelerate writes the gathered optimizer state as optimizer.bin instead of
# optimizer.pt, next to pytorch_model_fsdp.bin (the gathered weights it loads back); both with torch.save.
_FSDP_OPTIMIZER = "optimizer.bin"
_FSDP_WEIGHTS = "pytorch_model_fsdp.bin"
# rng_state.pth in one process, rng_state_<rank>.pth per rank under torchrun.
_RNG_FILES = "rng_state*.pth"
# A pickle of the TrainingArguments that nothing loads back; we keep no pickles around.
_UNUSED_PICKLES = ("training_args.bin",)
_HASH_THREADS = 4
_TORN = "is incomplete (no completion marker: its save was cut short)"


@dataclass(frozen=True)
class CheckpointRef:
    """A complete checkpoint: its directory and global step."""

    path: Path
    step: int


class NoUsableCheckpoint(UserError):
    """Checkpoints were committed for this run, but none of them is whole enough to resume from."""


def _checkpoint_dirs(checkpoints_dir: Path) -> list[tuple[int, Path]]:
    if not checkpoints_dir.is_dir():
        return []
    found = []
    for child in checkpoints_dir.iterdir():
        match = _CHECKPOINT_DIR.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return sorted(found)


def _read_marker(path: Path, step: int | None) -> dict | None:
    try:
        marker = json.loads((path / COMPLETE_MARKER).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(marker, dict) or (step is not None and marker.get("step") != step):
        return None
    return marker


def is_complete(path: Path, step: int | None = None) -> bool:
    """True when ``path`` carries a valid completion marker (for ``step``, when given).

    This reads the marker only; :func:`checkpoint_problem` also checks the files against it.
    """
    return _read_marker(Path(path), step) is not None


def complete_checkpoints(checkpoints_dir: Path) -> list[CheckpointRef]:
    """All checkpoints under ``checkpoints_dir`` that carry a valid marker, oldest first."""
    return [CheckpointRef(path, step) for step, path in _checkpoint_dirs(Path(checkpoints_dir)) if is_complete(path, step)]


def latest_complete_checkpoint(checkpoints_dir: Path) -> CheckpointRef | None:
    """The marked checkpoint with the highest step, or None (the marker only; see :func:`plan_resume`)."""
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


def _files(path: Path) -> list[str]:
    """Every regular file under ``path`` (relative, '/'-separated), the marker and its tmp file excluded."""
    skip = {COMPLETE_MARKER, f".{COMPLETE_MARKER}.tmp"}
    return sorted(
        file.relative_to(path).as_posix() for file in path.rglob("*") if file.is_file() and file.name not in skip
    )


def _missing_required(names: set[str]) -> list[str]:
    """The files a resumable checkpoint needs that ``names`` lacks, in the order a person reads them."""
    missing = [] if any(name in names for name in _WEIGHTS_FILES) else [_WEIGHTS_FILES[0]]
    fsdp = _FSDP_WEIGHTS in names
    optimizer = (_FSDP_OPTIMIZER, *_OPTIMIZER_FILES[1:]) if fsdp else _OPTIMIZER_FILES
    missing += [name for name in (*optimizer, _STATE_FILE) if name not in names]
    if not any(fnmatch.fnmatchcase(name, _RNG_FILES) for name in names):
        missing.append("rng_state.pth")
    return missing


def _sha256(file: Path) -> str:
    with file.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _hash_all(path: Path, names: list[str]) -> dict[str, str]:
    # hashlib releases the GIL on large updates, so threads hash the optimizer and the weights at once.
    with ThreadPoolExecutor(max_workers=max(1, min(_HASH_THREADS, len(names)))) as pool:
        return dict(zip(names, pool.map(lambda name: _sha256(path / name), names)))


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_checkpoint(path: Path, step: int) -> None:
    """Mark the checkpoint the Trainer just finished writing as complete.

    The marker, ``{"step": step, "files": {name: {"size": bytes, "sha256": hex}}}``, lists every
    file in ``path`` and is written last, atomically.

    Raises:
        RuntimeError: when the Trainer did not leave weights, optimizer, scheduler, RNG state and
            trainer state in ``path`` — a checkpoint we cannot fully resume from must not be marked complete.
    """
    path = Path(path)
    for name in _UNUSED_PICKLES:
        (path / name).unlink(missing_ok=True)
    names = _files(path)
    missing = _missing_required(set(names))
    if missing:
        raise RuntimeError(f"checkpoint {path} lacks {', '.join(missing)}; refusing to mark it complete")
    # Flush what the Trainer wrote before the marker claims it is there (a crash of the machine,
    # not only of the process, must not leave a marked checkpoint with missing bytes).
    for name in names:
        _fsync_path(path / name)
    digests = _hash_all(path, names)
    files = {name: {"size": (path / name).stat().st_size, "sha256": digests[name]} for name in names}
    tmp = path / f".{COMPLETE_MARKER}.tmp"
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump({"step": step, "files": files}, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path / COMPLETE_MARKER)
    _fsync_path(path)


def checkpoint_problem(path: Path, step: int) -> str | None:
    """Why the checkpoint at ``path`` cannot be resumed from, or None when it is whole.

    Returns a phrase that follows the directory's name: "is incomplete (optimizer.pt, scheduler.pt
    missing)", "is unreadable (model.safetensors is 100 bytes, expected 123456)". A marker written
    before markers listed their files is checked by what is on disk: every required file there, and
    each one's header (safetensors, JSON, the zip archive ``torch.save`` writes) readable.
    """
    path = Path(path)
    marker = _read_marker(path, step)
    if marker is None:
        return _TORN
    listed = marker.get("files")
    if listed is None:
        return _problem_on_disk(path)
    if not isinstance(listed, dict) or not all(isinstance(entry, dict) for entry in listed.values()):
        return f"is unreadable (its {COMPLETE_MARKER} does not list files with their sizes)"
    missing = _missing_required(set(listed)) + [name for name in listed if not (path / name).is_file()]
    if missing:
        return f"is incomplete ({', '.join(dict.fromkeys(missing))} missing)"
    for name, entry in listed.items():
        size = (path / name).stat().st_size
        if size != entry.get("size"):
            return f"is unreadable ({name} is {size} bytes, expected {entry.get('size')})"
    digests = _hash_all(path, list(listed))
    changed = [name for name, entry in listed.items() if digests[name] != entry.get("sha256")]
    if changed:
        return f"is unreadable ({', '.join(changed)} changed since the save: its sha256 differs from the marker's)"
    return None


def _problem_on_disk(path: Path) -> str | None:
    from safetensors import SafetensorError, safe_open

    names = _files(path)
    missing = _missing_required(set(names))
    if missing:
        return f"is incomplete ({', '.join(missing)} missing)"
    for name in names:
        file = path / name
        try:
            if name.endswith(".safetensors"):
                with safe_open(str(file), framework="numpy"):
                    pass  # opening parses the header and checks the file covers every tensor
            elif name.endswith(".json"):
                json.loads(file.read_text(encoding="utf-8"))
            elif name.endswith((".pt", ".pth", ".bin")) and not zipfile.is_zipfile(file):
                return f"is unreadable ({name} is not the archive torch.save writes)"
        except (SafetensorError, OSError, UnicodeDecodeError, ValueError) as exc:
            return f"is unreadable ({name}: {str(exc)[:200]})"
    return None


@dataclass
class ResumePlan:
    """What :func:`plan_resume` decided: the checkpoint to resume from and what it passed over."""

    checkpoint: CheckpointRef | None
    skipped: list[str] = field(default_factory=list)  # "checkpoint-60 is unreadable (...)", newest first
    removed: list[str] = field(default_factory=list)  # directory names deleted

    def message(self) -> str | None:
        """One log line naming every checkpoint passed over and why, or None when none was."""
        if not self.skipped:
            return None
        start = f"resuming from {self.checkpoint.path.name}" if self.checkpoint else "starting from step 0"
        removed = f" (removed {', '.join(self.removed)})" if self.removed else ""
        return f"{'; '.join(self.skipped)}; {start}{removed}"


def plan_resume(checkpoints_dir: Path) -> ResumePlan:
    """Pick the newest whole checkpoint to resume from; delete the ones that cannot be used.

    Torn directories (no valid marker) are deleted. Marked checkpoints are checked newest first
    against their markers; those newer than the one picked are deleted too (training writes those
    steps again). With no marked checkpoint the run starts from step 0, as on its first attempt.

    Raises:
        NoUsableCheckpoint: checkpoints were committed but none is whole. Nothing marked is deleted:
            starting over silently would throw away what the run had trained, so the user decides.
    """
    checkpoints_dir = Path(checkpoints_dir)
    plan = ResumePlan(checkpoint=None)
    unusable: list[Path] = []
    for step, path in reversed(_checkpoint_dirs(checkpoints_dir)):
        problem = checkpoint_problem(path, step)
        if problem is None:
            plan.checkpoint = CheckpointRef(path, step)
            break
        plan.skipped.append(f"{path.name} {problem}")
        if not is_complete(path, step):
            shutil.rmtree(path, ignore_errors=True)
            plan.removed.append(path.name)
        else:
            unusable.append(path)
    if plan.checkpoint is None and unusable:
        raise NoUsableCheckpoint(
            f"no usable checkpoint to resume from in {checkpoints_dir}: {'; '.join(plan.skipped)}; "
            "delete that folder and retry the job to train again from step 0."
        )
    for path in unusable:
        (path / COMPLETE_MARKER).unlink(missing_ok=True)  # a deletion cut short must not look complete
        shutil.rmtree(path, ignore_errors=True)
        plan.removed.append(path.name)
    # Torn directories older than the one picked (a kill mid-save, then a later save) are stale too.
    for path in remove_incomplete_checkpoints(checkpoints_dir):
        plan.skipped.append(f"{path.name} {_TORN}")
        plan.removed.append(path.name)
    return plan


def prune_checkpoints(checkpoints_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` complete checkpoints."""
    for ref in complete_checkpoints(Path(checkpoints_dir))[:-keep] if keep > 0 else []:
        # Unmark first: a deletion cut short must leave an incomplete directory, not a complete-looking one.
        (ref.path / COMPLETE_MARKER).unlink(missing_ok=True)
        shutil.rmtree(ref.path, ignore_errors=True)
