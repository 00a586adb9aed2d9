"""Speed benchmarks: each one measures a baseline and our way side by side, in one run, and reports
the ratio against a target. Not tests — a ratio on a busy machine is a measurement, not a verdict.

    .venv/bin/python bench/run.py            # every bench and the table; exit 1 when a ratio misses its target
    .venv/bin/python bench/run.py sft_padding_free --json   # the JSON document on stdout, the table on stderr
    .venv/bin/python bench/run.py --quick    # one round each, smaller workloads

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
    baseline: float | None  # the reference, median over rounds, in `unit`; None where there is none (a scaling point)
    candidate: float  # weightsmith
    ratio: float | None  # median over rounds of candidate / baseline (baseline / candidate when lower_is_better)
    target: float | None  # None: a measurement with no target (the table says "-")
    rounds: int
    details: dict | None = None  # a bench's whole table, when one ratio does not tell it all (serving)
    lower_is_better: bool = False  # `unit` is a time (s/step): the ratio is still "how much better we are"

    @property
    def met(self) -> bool | None:
        """Whether the ratio reaches the target; None for a measurement without one."""
        if self.target is None:
            return None
        return self.ratio is not None and self.ratio >= self.target


def alternate(baseline: Callable[[], float], candidate: Callable[[], float], rounds: int,
              warmup: bool = True) -> tuple[list[float], list[float]]:
    """Run the two measurements in alternating rounds after one warm-up each; return both series.

    ``warmup=False`` skips the warm-up pair, for measurements that leave their own first steps out (``--quick``)."""
    if warmup:
        baseline(), candidate()  # warm-up: first-call costs (lazy imports, allocator) hit neither series
    a, b = [], []
    for _ in range(rounds):
        a.append(baseline())
        b.append(candidate())
    return a, b


def summarize(name: str, what: str, unit: str, target: float | None, a: list[float], b: list[float],
              lower_is_better: bool = False) -> Result:
    """Reference series ``a`` and weightsmith series ``b`` (one value per round) as one result."""
    pairs = zip(a, b, strict=True)
    return Result(
        name=name, what=what, unit=unit, target=target, rounds=len(a), lower_is_better=lower_is_better,
        baseline=statistics.median(a), candidate=statistics.median(b),
        ratio=statistics.median(x / y if lower_is_better else y / x for x, y in pairs),
    )


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"


def table(results: list[Result]) -> str:
    """The results as one markdown table: metric, weightsmith, reference, ratio, target, met?"""
    lines = ["| metric | weightsmith | reference | ratio | target | met? |", "|---|---|---|---|---|---|"]
    for r in results:
        verdict = {None: "-", True: "yes", False: "**no**"}[r.met]
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}x"
        target = "-" if r.target is None else f">= {r.target:.2f}x"
        lines.append(f"| {r.name} ({r.unit}) | {_number(r.candidate)} | {_number(r.baseline)} | {ratio} | {target} | "
                     f"{verdict} |")
    return "\n".join(lines)


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

def sft_tokens_per_second(root: Path, steps: int = 24) -> Callable[..., float]:
    """A function that runs ``steps`` SFT steps (batch 16) on Quill chats and returns the median tokens/s of the
    4-step logging intervals after the first."""
    from weightsmith.training import sft
    from weightsmith.training.common import StageContext, StageInputs

    fx = quill_fixture(root)
    inputs = StageInputs(data_path=Path(fx["tasks_train"]), data_format="chat", model_path=fx["model"])
    counter = itertools.count()

    def tokens_per_second(padding_free: bool = True) -> float:
        base = root / f"sft-{next(counter)}"
        ctx = StageContext(work_dir=base / "work", output_dir=base / "out", seed=0,
                           metrics_path=base / "metrics.jsonl", result_path=base / "result.json")
        cfg = sft.Config(padding_free=padding_free, batch_size=16, max_steps=steps, logging_steps=4, save_steps=10**6,
                         lr=1e-3, assistant_only_loss=False, device="cpu")
        sft.run(cfg, inputs, ctx)
        rows = [json.loads(line) for line in ctx.metrics_path.read_text().splitlines()]
        return statistics.median(row["tokens_per_sec"] for row in rows[1:])  # the first interval has the warm-up

    return tokens_per_second


def bench_sft_padding_free(root: Path, rounds: int, quick: bool = False) -> Result:
    """SFT tokens/s: padding-free batches (one row, per-conversation positions) vs padded batches."""
    tokens_per_second = sft_tokens_per_second(root, steps=8 if quick else 24)
    a, b = alternate(lambda: tokens_per_second(False), lambda: tokens_per_second(True), rounds, warmup=not quick)
    return summarize("sft_padding_free", "SFT on Quill chats, padded → padding-free batches", "tokens/s", 1.3, a, b)


def bench_sft_packed_attention(root: Path, rounds: int, quick: bool = False) -> Result:
    """Padding-free SFT tokens/s: attention per conversation (ours) vs SDPA over the whole masked row."""
    from unittest import mock

    tokens_per_second = sft_tokens_per_second(root, steps=8 if quick else 24)

    def masked_row() -> float:
        with mock.patch("weightsmith.training.attention.use_packed_attention", lambda model: None):
            return tokens_per_second()

    a, b = alternate(masked_row, tokens_per_second, rounds, warmup=not quick)
    return summarize("sft_packed_attention", "padding-free SFT on Quill chats, block-diagonal masked row → "
                     "attention per conversation", "tokens/s", 1.15, a, b)


def bench_generate_batched(root: Path, rounds: int, quick: bool = False) -> Result:
    """Eval generation prompts/s: our length-sorted batches of 32 vs one prompt at a time."""
    from weightsmith.evals.generate import generate

    fx = quill_fixture(root, n_train=64)
    lines = Path(fx["eval_indist"]).read_text().splitlines()
    prompts = [json.loads(line)["prompt"] for line in lines][: 32 if quick else 64]

    def prompts_per_second(batch_size: int) -> float:
        start = time.perf_counter()
        generate(fx["model"], prompts, max_new_tokens=32, batch_size=batch_size, device="cpu")
        return len(prompts) / (time.perf_counter() - start)

    a, b = alternate(lambda: prompts_per_second(1), lambda: prompts_per_second(32), rounds)
    return summarize("generate_batched",
                     f"greedy generation of {len(prompts)} Quill prompts, one at a time → batches of 32",
                     "prompts/s", 4.0, a, b)


def bench_serving(root: Path, rounds: int, quick: bool = False) -> list[Result]:
    """Chat completions over HTTP at concurrency 1, 8, 32: continuous batching vs one generate() per request
    (``bench/serving.py``): throughput at 32 (target 3x) and p95 latency at 1 (no worse than 1.1x)."""
    import serving

    return serving.bench(root, rounds, quick=quick)


def compared(name: str) -> Callable[..., list[Result]]:
    """Bench ``name`` of ``bench/compare.py`` (weightsmith vs what users would pick instead), imported when it runs."""
    def bench(root: Path, rounds: int, quick: bool = False) -> list[Result]:
        import compare

        return compare.BENCHES[name](root, rounds, quick=quick)

    bench.__name__ = f"bench_{name}"
    return bench


BENCHES: dict[str, Callable[..., Result | list[Result]]] = {
    "sft_padding_free": bench_sft_padding_free,
    "sft_packed_attention": bench_sft_packed_attention,
    "generate_batched": bench_generate_batched,
    "serving": bench_serving,
    # bench/compare.py: the peak, a hand loop, TRL at its defaults, one generate() per example, scaling curves
    **{name: compared(name) for name in ("peak", "pretrain", "sft", "rl", "eval", "scale_model", "scale_data")},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"benches to run (default: all of {', '.join(BENCHES)})")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per bench (default 3)")
    parser.add_argument("--json", action="store_true", help="print one JSON document at the end")
    parser.add_argument("--quick", action="store_true",
                        help="one round each, and each bench's smaller workload (serving: a quarter of its requests)")
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
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp, contextlib.redirect_stdout(sys.stderr):
            outcome = bench(Path(tmp), rounds, **kwargs)
        print(f"bench {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        for result in outcome if isinstance(outcome, list) else [outcome]:
            results.append(result)
            verdict = {None: "no target", True: "met", False: "MISSED"}[result.met]
            ratio = "" if result.ratio is None else f", {result.ratio:.2f}x"
            target = "" if result.target is None else f"target {result.target:.2f}x, "
            print(f"{result.name}: {result.what}: {_number(result.baseline)} → {_number(result.candidate)} "
                  f"{result.unit}{ratio} ({target}{verdict})", file=sys.stderr, flush=True)
    # The table on stdout; under --json it goes to stderr and stdout holds the one JSON document.
    print(table(results), file=sys.stderr if args.json else sys.stdout, flush=True)
    if args.json:
        print(json.dumps({
            "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "quick": args.quick,
            "benches": [{**asdict(r), "met": r.met} for r in results],
        }, indent=2))
    return 0 if all(r.met is not False for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
