"""Speed benchmarks: each one measures a baseline and our way side by side, in one run, and reports
the ratio against a target. Not tests — a ratio on a busy machine is a measurement, not a verdict.

    .venv/bin/python bench/run.py            # every bench; exit 1 when a ratio misses its target
    .venv/bin/python bench/run.py sft_padding_free --json
    .venv/bin/python bench/run.py --quick    # one round each; benches that can also shrink their workload

The two variants run in alternating rounds (A B A B ...) on the same data, model and threads, so a
machine that slows down mid-run slows both; the ratio is the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Result:
    name: str
    what: str
    unit: str
    baseline: float  # median over rounds, in `unit` (higher is better)
    candidate: float
    ratio: float  # median of candidate / baseline over rounds
    target: float
    rounds: int
    details: dict | None = None  # a bench's whole table, when one ratio does not tell it all (serving)

    @property
    def met(self) -> bool:
        return self.ratio >= self.target


def alternate(baseline: Callable[[], float], candidate: Callable[[], float], rounds: int) -> tuple[list[float], list[float]]:
    """Run the two measurements in alternating rounds after one warm-up each; return both series."""
    baseline(), candidate()  # warm-up: first-call costs (lazy imports, allocator) hit neither series
    a, b = [], []
    for _ in range(rounds):
        a.append(baseline())
        b.append(candidate())
    return a, b


def summarize(name: str, what: str, unit: str, target: float, a: list[float], b: list[float]) -> Result:
    return Result(
        name=name, what=what, unit=unit, target=target, rounds=len(a),
        baseline=statistics.median(a), candidate=statistics.median(b),
        ratio=statistics.median(y / x for x, y in zip(a, b, strict=True)),
    )


# --- the Quill fixture: a tokenizer and a `small` model built from the shipped domain -------------

def quill_fixture(root: Path, n_train: int = 512) -> dict:
    """Quill datasets, a tokenizer trained on its manual and a fresh `small` model, under ``root``."""
    from weightsmith.data.tokenizer import train_tokenizer
    from weightsmith.domains.quill import build_datasets
    from weightsmith.training.models import build_model

    paths = build_datasets(root / "data", seed=0, n_train=n_train, n_test=64, system=False)
    manual = [p.read_text(encoding="utf-8") for p in sorted(Path(paths["manual"]).rglob("*")) if p.is_file()]
    tokenizer = train_tokenizer(manual, vocab_size=2048)
    model = build_model("small", tokenizer, max_positions=512)
    model_dir = root / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return {"model": model_dir, **paths}


# --- benches ---------------------------------------------------------------------------------------

def sft_tokens_per_second(root: Path) -> Callable[..., float]:
    """A function that runs 24 SFT steps (batch 16) on Quill chats and returns the median tokens/s."""
    from weightsmith.training import sft
    from weightsmith.training.common import StageContext, StageInputs

    fx = quill_fixture(root)
    inputs = StageInputs(data_path=Path(fx["tasks_train"]), data_format="chat", model_path=fx["model"])
    counter = itertools.count()

    def tokens_per_second(padding_free: bool = True) -> float:
        base = root / f"sft-{next(counter)}"
        ctx = StageContext(work_dir=base / "work", output_dir=base / "out", seed=0,
                           metrics_path=base / "metrics.jsonl", result_path=base / "result.json")
        cfg = sft.Config(padding_free=padding_free, batch_size=16, max_steps=24, logging_steps=4, save_steps=10**6,
                         lr=1e-3, assistant_only_loss=False, device="cpu")
        sft.run(cfg, inputs, ctx)
        rows = [json.loads(line) for line in ctx.metrics_path.read_text().splitlines()]
        return statistics.median(row["tokens_per_sec"] for row in rows[1:])  # the first interval has the warm-up

    return tokens_per_second


def bench_sft_padding_free(root: Path, rounds: int) -> Result:
    """SFT tokens/s: padding-free batches (one row, per-conversation positions) vs padded batches."""
    tokens_per_second = sft_tokens_per_second(root)
    a, b = alternate(lambda: tokens_per_second(False), lambda: tokens_per_second(True), rounds)
    return summarize("sft_padding_free", "SFT on Quill chats, padded → padding-free batches", "tokens/s", 1.3, a, b)


def bench_sft_packed_attention(root: Path, rounds: int) -> Result:
    """Padding-free SFT tokens/s: attention per conversation (ours) vs SDPA over the whole masked row."""
    from unittest import mock

    tokens_per_second = sft_tokens_per_second(root)

    def masked_row() -> float:
        with mock.patch("weightsmith.training.attention.use_packed_attention", lambda model: None):
            return tokens_per_second()

    a, b = alternate(masked_row, tokens_per_second, rounds)
    return summarize("sft_packed_attention", "padding-free SFT on Quill chats, block-diagonal masked row → "
                     "attention per conversation", "tokens/s", 1.15, a, b)


def bench_generate_batched(root: Path, rounds: int) -> Result:
    """Eval generation prompts/s: our length-sorted batches of 32 vs one prompt at a time."""
    from weightsmith.evals.generate import generate

    fx = quill_fixture(root, n_train=64)
    prompts = [json.loads(line)["prompt"] for line in Path(fx["eval_indist"]).read_text().splitlines()][:64]

    def prompts_per_second(batch_size: int) -> float:
        start = time.perf_counter()
        generate(fx["model"], prompts, max_new_tokens=32, batch_size=batch_size, device="cpu")
        return len(prompts) / (time.perf_counter() - start)

    a, b = alternate(lambda: prompts_per_second(1), lambda: prompts_per_second(32), rounds)
    return summarize("generate_batched", "greedy generation of 64 Quill prompts, one at a time → batches of 32",
                     "prompts/s", 4.0, a, b)


def bench_serving(root: Path, rounds: int, quick: bool = False) -> list[Result]:
    """Chat completions over HTTP at concurrency 1, 8, 32: continuous batching vs one generate() per request
    (``bench/serving.py``): throughput at 32 (target 3x) and p95 latency at 1 (no worse than 1.1x)."""
    import serving

    return serving.bench(root, rounds, quick=quick)


BENCHES: dict[str, Callable[..., Result | list[Result]]] = {
    "sft_padding_free": bench_sft_padding_free,
    "sft_packed_attention": bench_sft_packed_attention,
    "generate_batched": bench_generate_batched,
    "serving": bench_serving,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"benches to run (default: all of {', '.join(BENCHES)})")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per bench (default 3)")
    parser.add_argument("--json", action="store_true", help="print one JSON document at the end")
    parser.add_argument("--quick", action="store_true",
                        help="one round each, and a smaller workload where a bench has one (serving)")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHES]
    if unknown:
        print(f"error: no bench named {', '.join(unknown)}; choose from {', '.join(BENCHES)}.", file=sys.stderr)
        return 2
    if args.rounds < 1:
        print("error: --rounds must be at least 1.", file=sys.stderr)
        return 2

    # Progress bars and per-step logs of the runs being timed are noise here.
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import torch

    results = []
    rounds = 1 if args.quick else args.rounds
    for name in args.names or list(BENCHES):
        bench = BENCHES[name]
        kwargs = {"quick": True} if args.quick and "quick" in inspect.signature(bench).parameters else {}
        # What the timed runs print (the Trainer's summary dict) goes to stderr: stdout is the JSON.
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp, contextlib.redirect_stdout(sys.stderr):
            outcome = bench(Path(tmp), rounds, **kwargs)
        for result in outcome if isinstance(outcome, list) else [outcome]:
            results.append(result)
            verdict = "met" if result.met else "MISSED"
            print(f"{result.name}: {result.what}: {result.baseline:,.1f} → {result.candidate:,.1f} {result.unit}, "
                  f"{result.ratio:.2f}x (target {result.target:.2f}x, {verdict})", file=sys.stderr)
    if args.json:
        print(json.dumps({
            "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "benches": [{**asdict(r), "met": r.met} for r in results],
        }, indent=2))
    return 0 if all(r.met for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
