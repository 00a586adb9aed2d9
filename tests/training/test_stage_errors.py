"""User mistakes exit 2 with one sentence on stderr, before any compute, and leave output_dir absent."""

from __future__ import annotations

from pathlib import Path

from training.training_helpers import StageRun, run_runner, run_stage, write_jsonl


def assert_user_error(run: StageRun, *phrases: str) -> None:
    assert run.proc.returncode == 2, run.proc.stderr
    message = run.proc.stderr.strip()
    assert "\n" not in message and message.startswith("error: "), message
    for phrase in phrases:
        assert phrase in message, message
    assert not run.output_dir.exists()
    assert not (run.base / "result.json").exists()


def test_a_dataset_of_the_wrong_format(tmp_path: Path, data_dir: Path, tiny_model_dir: Path):
    run = run_stage(
        tmp_path,
        "sft",
        {},
        {"data_path": data_dir / "text.jsonl", "data_format": "text", "model_path": tiny_model_dir},
    )
    assert_user_error(run, "stage 'sft' trains on a chat dataset", "text")


def test_rows_that_do_not_match_the_stage(tmp_path: Path, data_dir: Path, tiny_model_dir: Path):
    # No declared format, so the rows themselves are checked: chat rows are not preference pairs.
    run = run_stage(tmp_path, "dpo", {}, {"data_path": data_dir / "chat.jsonl", "model_path": tiny_model_dir})
    assert_user_error(run, "line 1", "prompt, chosen, rejected")


def test_a_model_path_that_is_not_a_model(tmp_path: Path, data_dir: Path):
    not_a_model = tmp_path / "just_a_folder"
    not_a_model.mkdir()
    run = run_stage(
        tmp_path / "run",
        "dpo",
        {},
        {"data_path": data_dir / "preference.jsonl", "data_format": "preference", "model_path": not_a_model},
    )
    assert_user_error(run, "is not a model directory", str(not_a_model))


def test_a_bad_config_key(tmp_path: Path, data_dir: Path, tokenizer_dir: Path):
    run = run_stage(
        tmp_path,
        "pretrain",
        {"max_step": 3},
        {"data_path": data_dir / "text.jsonl", "data_format": "text", "tokenizer_path": tokenizer_dir},
    )
    assert_user_error(run, "'max_step' is not a setting of the pretrain stage", "did you mean 'max_steps'")


def test_a_reward_whose_column_is_missing(tmp_path: Path, tiny_model_dir: Path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "2+2="}])
    run = run_stage(
        tmp_path / "run",
        "grpo",
        {"reward": "exact_match"},
        {"data_path": prompts, "data_format": "prompt", "model_path": tiny_model_dir},
    )
    assert_user_error(run, "reward 'exact_match' (weightsmith.rewards.builtin.exact_match) needs the column(s) answer")


def test_a_non_empty_output_dir_is_left_alone(tmp_path: Path, data_dir: Path, tokenizer_dir: Path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "precious.txt").write_text("keep me")
    proc = run_stage(
        tmp_path,
        "pretrain",
        {},
        {"data_path": data_dir / "text.jsonl", "data_format": "text", "tokenizer_path": tokenizer_dir},
    ).proc
    assert proc.returncode == 2 and "is not empty" in proc.stderr
    assert (tmp_path / "out" / "precious.txt").read_text() == "keep me"


def test_an_unknown_kind_and_a_broken_spec(tmp_path: Path):
    run = run_stage(tmp_path, "pretrian", {}, {})
    assert_user_error(run, "unknown stage kind 'pretrian'", "did you mean 'pretrain'")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    proc = run_runner(broken)
    assert proc.returncode == 2 and "is not valid JSON" in proc.stderr


def test_a_max_length_that_cuts_every_answer(tmp_path: Path, data_dir: Path, tiny_model_dir: Path):
    run = run_stage(
        tmp_path,
        "sft",
        {"max_length": 8, "device": "cpu"},
        {"data_path": data_dir / "chat.jsonl", "data_format": "chat", "model_path": tiny_model_dir},
    )
    assert_user_error(run, "max_length 8 cuts every conversation", "raise max_length")
