"""Trainer callbacks every recipe attaches (via ``common.train_with_resume``): metrics and checkpoint commit."""

from __future__ import annotations

import time
from pathlib import Path

from transformers import TrainerCallback

from weightsmith.training.checkpoint import commit_checkpoint, prune_checkpoints
from weightsmith.training.common import wait_for_all_ranks
from weightsmith.training.metrics import MetricsWriter, metrics_row


class MetricsCallback(TrainerCallback):
    """Writes one metrics row per logging step, with throughput measured over the logging interval.

    Tokens are the Trainer's ``state.num_input_tokens_seen`` (restored on resume), so every recipe
    counts them the same way: non-padding input tokens for the Trainer/SFT/DPO, prompt + completion
    tokens for GRPO (which counts them itself).
    """

    def __init__(self, metrics_path: Path) -> None:
        self.writer = MetricsWriter(metrics_path)
        self._last_time = 0.0
        self._last_tokens = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self._last_time = time.perf_counter()
        self._last_tokens = state.num_input_tokens_seen

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs or not state.is_world_process_zero:
            return  # the end-of-run summary, an eval log, or another rank's copy
        now = time.perf_counter()
        elapsed = max(now - self._last_time, 1e-9)
        tokens_per_sec = (state.num_input_tokens_seen - self._last_tokens) / elapsed
        self._last_time, self._last_tokens = now, state.num_input_tokens_seen
        self.writer.write(metrics_row(state.global_step, logs, tokens_per_sec))


class CheckpointCommitCallback(TrainerCallback):
    """After each Trainer save: mark the checkpoint complete, then delete the oldest beyond ``keep``.

    ``on_save`` runs after ``Trainer._save_checkpoint`` has written every file, so the marker is last.
    """

    def __init__(self, keep: int) -> None:
        self.keep = keep

    def on_save(self, args, state, control, **kwargs):
        # Every rank writes its own RNG state into the checkpoint: all must be done before it is complete.
        wait_for_all_ranks()
        if not state.is_world_process_zero:
            return
        checkpoints_dir = Path(args.output_dir)
        commit_checkpoint(checkpoints_dir / f"checkpoint-{state.global_step}", state.global_step)
        prune_checkpoints(checkpoints_dir, self.keep)
