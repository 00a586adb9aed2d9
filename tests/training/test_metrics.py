"""The metrics sink: our row schema, flushed lines, steps that only increase across a resume."""

from __future__ import annotations

import json
from pathlib import Path

from weightsmith.training.metrics import MetricsWriter, metrics_row


def test_row_schema_renames_and_keeps_numbers_only():
    logs = {
        "loss": 1.5,
        "learning_rate": 1e-3,
        "grad_norm": 0.5,
        "num_input_tokens_seen": 128,
        "rewards/margins": 0.25,
        "train_tokens_per_second": 99.0,  # the Trainer's process-average: ours replaces it
        "note": "text",
        "flag": True,
    }
    row = metrics_row(7, logs, tokens_per_sec=64.0)
    assert row == {
        "step": 7,
        "loss": 1.5,
        "lr": 1e-3,
        "grad_norm": 0.5,
        "train_tokens": 128.0,
        "rewards/margins": 0.25,
        "tokens_per_sec": 64.0,
    }


def test_writer_appends_flushed_lines_and_skips_steps_already_written(tmp_path: Path):
    path = tmp_path / "metrics.jsonl"
    writer = MetricsWriter(path)
    assert writer.write({"step": 1, "loss": 2.0})
    assert writer.write({"step": 2, "loss": 1.9})
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]

    # A resumed process re-trains steps 2.. from a checkpoint at step 1; the file keeps one row per step.
    resumed = MetricsWriter(path)
    assert not resumed.write({"step": 2, "loss": 1.9})
    assert resumed.write({"step": 3, "loss": 1.8})
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3]


def test_writer_recovers_from_a_line_torn_by_a_kill(tmp_path: Path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    writer = MetricsWriter(path)
    assert writer.write({"step": 2, "loss": 1.9})
    lines = path.read_text().splitlines()
    assert json.loads(lines[-1]) == {"step": 2, "loss": 1.9}
    assert lines[1] == '{"step": 2, "lo'  # left as is, on its own line
