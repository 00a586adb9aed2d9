"""The metrics sink: one JSON line per logging step, appended and flushed for the worker to tail.

A row is ``{"step": int, "loss": float, "lr": float, "grad_norm": float, "tokens_per_sec": float,
...}`` plus every other numeric value the trainer logged (TRL's ``rewards/...`` for DPO and GRPO; ``aux_loss``,
the router's load-balancing loss, for a mixture of experts).

Steps in the file only ever increase. After a resume, the steps between the checkpoint and the
crash are trained again; their rows from the first attempt are already in the file, so the
rerun skips them rather than writing a second row for the same step. Pure stdlib.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

# Trainer log keys renamed to our row schema.
_RENAMES = {"learning_rate": "lr", "num_input_tokens_seen": "train_tokens"}
# Keys the Trainer logs that describe the whole run, not a step (they go to result.json instead).
_RUN_SUMMARY_KEYS = {"train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss", "total_flos"}
# The Trainer's throughput is averaged since the process started; ours (tokens_per_sec) is per interval.
_DROPPED_KEYS = _RUN_SUMMARY_KEYS | {"train_tokens_per_second"}


def _last_logged_step(path: Path) -> int:
    last = -1
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return last
    for line in lines:
        try:
            last = max(last, int(json.loads(line)["step"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue  # a line torn by a kill mid-write
    return last


def metrics_row(step: int, logs: dict[str, Any], tokens_per_sec: float) -> dict[str, Any]:
    """Our row schema from a Trainer ``logs`` dict: renamed keys, numeric values only."""
    row: dict[str, Any] = {"step": int(step)}
    for key, value in logs.items():
        if key in _DROPPED_KEYS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if key != "step":
            row[_RENAMES.get(key, key)] = float(value)
    row["tokens_per_sec"] = float(tokens_per_sec)
    return row


class MetricsWriter:
    """Appends rows to ``path``, one flushed line each, never repeating a step already there."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._last_step = _last_logged_step(self.path)
        # A kill mid-write can leave a line without its newline; start ours on a fresh line.
        if self.path.exists() and self.path.stat().st_size > 0:
            with self.path.open("rb") as handle:
                handle.seek(-1, os.SEEK_END)
                needs_newline = handle.read(1) != b"\n"
            if needs_newline:
                with self.path.open("a", encoding="utf-8") as handle:
                    handle.write("\n")

    def write(self, row: dict[str, Any]) -> bool:
        """Append ``row`` unless its step is already in the file; return whether it was written."""
        if row["step"] <= self._last_step:
            return False
        # A diverged loss is written as NaN/Infinity, which Python's json reads back.
        line = json.dumps(row)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
        self._last_step = row["step"]
        return True
