"""A name used for both a dataset and a stage is reported as that, not as a dependency cycle (issue 10, item 7)."""

from __future__ import annotations

from pathlib import Path

from helpers import CLI, EXAMPLES

# The failing input: a stage named like the dataset it trains on.
PIPELINE = """
name: long
datasets:
  long_answer: {path: tasks.jsonl, format: chat}
stages:
  long_answer: {kind: sft, model: base@v1, data: long_answer}
"""


def test_a_stage_and_a_dataset_with_one_name(cli: CLI, tmp_path: Path):
    (tmp_path / "tasks.jsonl").write_text((EXAMPLES / "tiny" / "data" / "tasks.jsonl").read_text())
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(PIPELINE)
    proc = cli("run", str(pipeline), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"error: {pipeline}: the name 'long_answer' is used twice, by datasets.long_answer and by "
        "stages.long_answer; rename the stage (e.g. to 'long_answer_sft'): a 'data: long_answer' cannot say which "
        "one it means."
    )
    assert cli.json("jobs", "list") == [] and cli.json("data", "list") == []


def test_a_stage_whose_data_is_its_own_name(cli: CLI, tmp_path: Path):
    # The dataset is in the workspace, not in the pipeline: the stage's name still hides it.
    (tmp_path / "tasks.jsonl").write_text((EXAMPLES / "tiny" / "data" / "tasks.jsonl").read_text())
    cli("data", "add", "long_answer", str(tmp_path / "tasks.jsonl"), "--format", "chat")
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text("name: long\nstages:\n  long_answer: {kind: sft, model: base@v1, data: long_answer}\n")
    proc = cli("run", str(pipeline), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"error: {pipeline}: stages.long_answer.data: 'long_answer' is also this stage's own name, so it reads as "
        "the stage itself, not the dataset 'long_answer'; rename the stage (e.g. to 'long_answer_sft')."
    )
    assert "cycle" not in proc.stderr
