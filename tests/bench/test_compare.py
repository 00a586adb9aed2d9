"""The comparison benches (bench/compare.py) at their smallest workload: each runs both sides for real and
returns well-formed results; the runner prints the table and, under --json, one JSON document.
Nothing here checks a speed (a ratio on a shared machine is a measurement, not a verdict)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import compare  # noqa: E402
from run import Result, table  # noqa: E402


def _run(name: str, tmp_path: Path) -> list[Result]:
    results = compare.BENCHES[name](tmp_path, 1, load=compare.MINIMAL)
    assert results and all(isinstance(r, Result) for r in results)
    for r in results:
        assert r.rounds == 1 and r.name and r.what and r.unit
        assert math.isfinite(r.candidate) and r.candidate > 0
        assert r.baseline is None or (math.isfinite(r.baseline) and r.baseline > 0)
        if r.ratio is not None and r.baseline is not None:  # the ratio is weightsmith over the reference
            expected = r.baseline / r.candidate if r.lower_is_better else r.candidate / r.baseline
            assert r.ratio == pytest.approx(expected)
        assert r.met is None if r.target is None else isinstance(r.met, bool)
    rows = table(results).splitlines()
    assert rows[0] == "| metric | weightsmith | reference | ratio | target | met? |"
    assert len(rows) == 2 + len(results) and all(row.count("|") == 7 for row in rows)
    return results


def _names(results: list[Result]) -> list[str]:
    return [r.name for r in results]


def test_peak_is_a_measurement_per_training_dtype_without_a_target(tmp_path):
    peaks = _run("peak", tmp_path)
    expected = ["peak_matmul_fp32"] + (["peak_matmul_bf16"] if compare.training_dtype() == "bfloat16" else [])
    assert _names(peaks) == expected
    assert all(p.target is None and p.baseline is None and p.candidate > 0 for p in peaks)


@pytest.mark.slow
def test_pretrain_against_a_hand_loop_and_mfu_over_the_peak(tmp_path):
    throughput, mfu = _run("pretrain", tmp_path)
    assert (throughput.name, throughput.target) == ("pretrain_tokens_per_s", 0.9)
    assert (mfu.name, mfu.target) == ("pretrain_mfu", 0.7)
    assert mfu.baseline == 1.0 and 0 < mfu.candidate < 1 and mfu.ratio == pytest.approx(mfu.candidate)


@pytest.mark.slow
def test_sft_against_trl_defaults_and_trl_padding_free(tmp_path):
    results = _run("sft", tmp_path)
    assert _names(results) == ["sft_vs_trl_default", "sft_vs_trl_best"]
    assert [r.target for r in results] == [1.5, 1.0]
    assert set(results[1].details) == {"trl_default", "trl_padding_free", "stage"}


@pytest.mark.slow
def test_dpo_and_grpo_against_trl_with_the_rollout_share(tmp_path):
    results = _run("rl", tmp_path)
    assert _names(results) == ["dpo_step", "grpo_step", "grpo_rollout_tokens_per_s", "grpo_generation_share"]
    share = results[-1]
    assert 0 < share.candidate <= 1 and 0 < share.baseline <= 1 and share.ratio is None
    assert results[0].lower_is_better and results[1].lower_is_better and results[2].target == 2.0


@pytest.mark.slow
def test_eval_suite_against_one_generate_per_example(tmp_path):
    (result,) = _run("eval", tmp_path)
    assert result.name == "eval_suite" and result.unit == "examples/s" and result.target == 5.0


@pytest.mark.slow
def test_scaling_curves_of_model_and_data(tmp_path):
    (model,) = _run("scale_model", tmp_path)
    assert model.name == "scale_model_tiny" and model.details["matmul_params"] > 0
    data = _run("scale_data", tmp_path)
    phases = ("validate", "ingest", "tokenize")
    assert _names(data) == [f"scale_data_{phase}_{n}" for phase in phases for n in (200, 400)]
    assert all(r.baseline is None for r in data[::2])  # the smallest size is where the ratio starts


def test_the_runner_prints_the_table_and_one_json_document_last():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "peak", "--quick", "--json"],
                          capture_output=True, text=True, timeout=120, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    document = json.loads(proc.stdout)  # stdout holds the document alone
    assert document["quick"] is True and document["threads"] == 1
    bench = document["benches"][0]
    assert bench["name"] == "peak_matmul_fp32" and bench["met"] is None and bench["candidate"] > 0
    assert "| metric | weightsmith | reference | ratio | target | met? |" in proc.stderr
    assert "| peak_matmul_fp32 (GFLOP/s) |" in proc.stderr
