"""The bench runner's own logic (the benches themselves are measurements, run by `make bench`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _runner():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_ratio_is_the_median_of_per_round_ratios_and_rounds_alternate():
    bench = _runner()
    calls = []
    a_values, b_values = iter([1.0, 10.0, 2.0, 4.0]), iter([1.0, 20.0, 2.0, 2.0])

    def a():
        calls.append("a")
        return next(a_values)

    def b():
        calls.append("b")
        return next(b_values)

    a_series, b_series = bench.alternate(a, b, rounds=3)
    assert calls == ["a", "b"] * 4  # one warm-up pair, then A B A B A B
    result = bench.summarize("x", "x", "u/s", 1.5, a_series, b_series)
    # Rounds 20/10, 2/2, 2/4 → median 1.0, where median(b) / median(a) would say 0.5.
    assert result.ratio == 1.0 and result.baseline == 4.0 and result.candidate == 2.0
    assert not result.met


def test_an_unknown_bench_is_one_sentence_and_exit_2():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "sft_padingfree"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: no bench named sft_padingfree; choose from sft_padding_free")
