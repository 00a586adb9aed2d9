"""One reward contract: the same user function trains a GRPO stage and scores an eval KPI.

Issue 10's failing input: ``f(completions, prompt, answer)`` passed the GRPO pre-check and then
crashed the first step (TRL passes ``prompts``), while a function taking ``prompts`` trained but
was refused by the eval.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from training.training_helpers import assert_metrics_rows, assert_ok, runner_env, run_stage, write_jsonl

from weightsmith.errors import UserError

REWARDS = '''
from weightsmith.rewards import completion_text


def _text(prompt):
    return prompt if isinstance(prompt, str) else " ".join(m["content"] for m in prompt)


def answer_in_prompt(completions, prompt, answer):
    """1 when the row's answer is named in the prompt it was given, plus a length term so a group varies."""
    return [float(a in _text(p)) + len(completion_text(c)) / 100 for c, p, a in zip(completions, prompt, answer)]


def trl_style(prompts, completions, **kwargs):
    return [float("north" in _text(p)) for p in prompts]


def counts_ids(completions, completion_ids):
    return [len(ids) / 100 for ids in completion_ids]


def needs_reference(completions, prompt, reference):
    return [0.0] * len(completions)
'''

FAST_GRPO = {
    "max_steps": 2, "logging_steps": 1, "save_steps": 10, "batch_size": 4, "device": "cpu", "warmup_steps": 0,
    "lr": 1e-3, "num_generations": 4, "max_completion_length": 6,
}


@pytest.fixture(scope="module")
def contract_rewards(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("contract_rewards")
    (path / "contract_rewards.py").write_text(REWARDS, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    rows = [{"prompt": [{"role": "user", "content": f"Truck {n} goes north. Which depot?"}], "answer": "north"}
            for n in range(4)]
    return write_jsonl(tmp_path_factory.mktemp("prompts") / "prompts.jsonl", rows)


def test_a_reward_taking_prompt_trains_grpo(tmp_path, tiny_model_dir, contract_rewards, prompts):
    rewards = ["contract_rewards:answer_in_prompt", "contract_rewards:trl_style", "contract_rewards:counts_ids"]
    run = run_stage(
        tmp_path, "grpo", {**FAST_GRPO, "reward": rewards},
        {"data_path": prompts, "data_format": "prompt", "model_path": tiny_model_dir},
        env=runner_env(extra_pythonpath=contract_rewards),
    )
    assert_ok(run)
    rows = assert_metrics_rows(run, extra_keys={f"rewards/{name}/mean" for name in ("answer_in_prompt", "trl_style")})
    # Every prompt names its answer: 1 + a length term means the reward saw the prompt under `prompt`.
    assert all(row["rewards/answer_in_prompt/mean"] >= 1.0 for row in rows)
    assert all(row["rewards/trl_style/mean"] == 1.0 for row in rows)
    assert all(row["rewards/counts_ids/mean"] > 0 for row in rows)  # completion_ids reached it
    assert run.result()["steps"] == 2


def test_the_same_functions_score_an_eval(ws, tiny_model_dir, contract_rewards, prompts, monkeypatch):
    from weightsmith.evals.run import run_suite
    from weightsmith.evals.suite import load_suite

    monkeypatch.syspath_prepend(str(contract_rewards))
    kpi = {"path": str(prompts), "format": "prompt", "dataset_name": "depots"}
    suite = load_suite({"name": "contract", "generation": {"max_new_tokens": 4, "batch_size": 4}, "kpis": {
        "named": {**kpi, "metric": "contract_rewards:answer_in_prompt"},
        "plural": {**kpi, "metric": "contract_rewards:trl_style"},
    }})
    doc = run_suite(ws, suite, str(tiny_model_dir), device="cpu")
    assert doc["kpis"]["named"]["value"] >= 1.0 and doc["kpis"]["plural"]["value"] == 1.0

    # An option the function does not take would be dropped: refused, naming it.
    typo = load_suite({"name": "typo", "kpis": {"named": {**kpi, "metric": "contract_rewards:answer_in_prompt",
                                                          "options": {"answr": "north"}}}})
    with pytest.raises(UserError, match=r"kpis.named.options.answr: metric 'contract_rewards:answer_in_prompt' "
                                        r"\(contract_rewards.answer_in_prompt\) takes no parameter 'answr' "
                                        r"\(did you mean 'answer'\?\)"):
        run_suite(ws, typo, str(tiny_model_dir), device="cpu")

    # A parameter only GRPO training provides: refused before any generation, naming it.
    needs_ids = load_suite({"name": "ids", "kpis": {"ids": {**kpi, "metric": "contract_rewards:counts_ids"}}})
    with pytest.raises(UserError, match=r"kpis.ids: metric 'contract_rewards:counts_ids' \(contract_rewards.counts_ids\) "
                                        r"needs 'completion_ids' \(the completions' token ids\), which only GRPO training "
                                        r"passes; give the parameter a default"):
        run_suite(ws, needs_ids, str(tiny_model_dir), device="cpu")


def test_a_reward_wanting_a_missing_column_is_refused_before_grpo_loads_a_model(tmp_path, tiny_model_dir,
                                                                              contract_rewards, prompts):
    run = run_stage(
        tmp_path, "grpo", {**FAST_GRPO, "reward": "contract_rewards:needs_reference"},
        {"data_path": prompts, "data_format": "prompt", "model_path": tiny_model_dir},
        env=runner_env(extra_pythonpath=contract_rewards),
    )
    assert run.proc.returncode == 2, run.proc.stderr
    message = run.proc.stderr.strip()
    assert message == (
        f"error: {prompts}, row 1: reward 'contract_rewards:needs_reference' (contract_rewards.needs_reference) needs "
        "the column(s) reference, which the row lacks (it has: answer, prompt); add them to every row, or give the "
        "parameters defaults."
    )
    assert not run.output_dir.exists()


def test_a_pipeline_is_refused_before_anything_is_queued(cli, tmp_path, contract_rewards):
    import os
    import shutil

    from helpers import EXAMPLES

    shutil.copytree(EXAMPLES / "tiny", tmp_path / "tiny")
    pipeline = tmp_path / "tiny" / "pipeline.yaml"
    proc = cli("run", str(pipeline), "grpo.reward=contract_rewards:needs_reference", "--detach", check=False,
               env={"PYTHONPATH": os.pathsep.join([str(contract_rewards), os.environ.get("PYTHONPATH", "")])})
    assert proc.returncode == 2, proc.stderr
    assert (
        f"stages.grpo.reward: {pipeline.parent / 'data' / 'prompts.jsonl'}, row 1: reward 'contract_rewards:needs_reference' "
        "(contract_rewards.needs_reference) needs the column(s) reference"
    ) in proc.stderr
    assert cli.json("jobs", "list") == []  # not after pretrain, cpt, sft and dpo have trained
