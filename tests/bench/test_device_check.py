"""bench/device_check.sh, the GPU check: it parses, and where no CUDA device is present it stops at once with
one sentence saying so (the check itself runs only on a GPU machine; nothing here pretends it ran)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "device_check.sh"


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", **env})


def test_the_script_parses_and_explains_itself():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    usage = _run("--help")
    assert usage.returncode == 0 and "bench/device_check.sh [SECONDS]" in usage.stdout


def test_a_time_limit_that_is_not_seconds_is_refused():
    proc = _run("ten")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "device_check: the time limit is a whole number of seconds, got 'ten'."


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: the script would run the check")
def test_without_a_cuda_device_it_stops_at_once_saying_so(tmp_path):
    proc = _run("60", DEVICE_CHECK_DIR=str(tmp_path / "work"))
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip() == (
        "device_check: no CUDA device is present (torch.cuda.is_available() is False); this check runs bf16 "
        "training, eval and serving on a CUDA GPU, so run it on a machine that has one."
    )
    assert not (tmp_path / "work").exists()  # nothing was started


def test_the_vllm_rollouts_it_asks_for_are_a_valid_grpo_setting():
    """With vllm installed the script adds its ``VLLM_ROLLOUTS`` to the grpo stage; the stage must accept it."""
    import re

    import yaml

    from weightsmith.training import validate_stage_config

    text = SCRIPT.read_text()
    rollouts = yaml.safe_load(re.search(r"^VLLM_ROLLOUTS='(.*)'$", text, re.MULTILINE).group(1))
    assert 'GRPO_EXTRA="    rollouts: $VLLM_ROLLOUTS"' in text
    cfg = validate_stage_config("grpo", {"device": "cuda", "rollouts": rollouts})
    assert cfg.rollouts.trainer_arguments() == {
        "use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.3}
