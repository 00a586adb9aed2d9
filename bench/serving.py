"""Serving bench: requests/s and p50/p95 latency at concurrency 1, 8 and 32, continuous batching vs one
``generate()`` per request, through the real OpenAI-compatible server.

    .venv/bin/python bench/serving.py                 # 3 rounds, the table on stdout
    .venv/bin/python bench/serving.py --quick         # 1 round, a quarter of the requests (~1 min idle)
    .venv/bin/python bench/run.py serving --json      # the same as a bench of bench/run.py

Two ``weightsmith serve quill@v1`` processes run side by side on the same model version, one with
``--engine naive`` (each request is one ``model.generate()``, one at a time: the baseline) and one with
``--engine batched``. A closed-loop client keeps ``c`` chat requests in flight against one server, then the
other (A B A B ...), at each concurrency; every request asks for ``max_tokens`` new tokens at temperature
0, and the fresh ``small`` model never emits EOS, so every request does the same work. Ratios are medians
of per-round ratios. Targets: throughput at 32 concurrent >= 3x naive; p95 latency at concurrency 1 no worse
than 1.1x naive (reported as naive p95 / batched p95 >= 0.91).

The servers use one torch thread each (``OMP_NUM_THREADS=1``): the client needs the machine's other core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import Result, quill_fixture  # noqa: E402  (bench/ is not a package)

API_KEY = "bench-serving-key"
CONCURRENCY = (1, 8, 32)


@contextmanager
def serve(ws_dir: Path, engine: str, threads: int = 1) -> Iterator[str]:
    """A ``weightsmith serve quill@v1 --engine ENGINE`` on a free port; yields its base URL."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "weightsmith", "serve", "quill@v1", "--engine", engine, "--port", "0",
         "--api-key", API_KEY, "--device", "cpu"],
        cwd=ws_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stderr: list[str] = []
    threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True).start()
    try:
        url = None
        for line in proc.stdout:
            if "listening on " in line:
                url = line.split("listening on ", 1)[1].strip()
                break
        if url is None:
            proc.wait(timeout=30)
            raise RuntimeError(f"weightsmith serve --engine {engine} exited {proc.returncode}:\n{''.join(stderr)[-3000:]}")
        threading.Thread(target=lambda: proc.stdout.read(), daemon=True).start()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


async def _closed_loop(url: str, bodies: list[dict], concurrency: int) -> tuple[float, list[float]]:
    """Send every body with ``concurrency`` in flight; return (requests/s, each request's latency in s)."""
    import httpx

    latencies: list[float] = []
    pending = iter(bodies)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=600,
                                 limits=limits) as client:
        async def worker() -> None:
            for body in pending:
                start = time.perf_counter()
                response = await client.post("/v1/chat/completions", json=body)
                latencies.append(time.perf_counter() - start)
                if response.status_code != 200:
                    raise RuntimeError(f"HTTP {response.status_code}: {response.text[:500]}")
                usage = response.json()["usage"]
                if usage["completion_tokens"] != body["max_tokens"]:
                    raise RuntimeError(f"asked {body['max_tokens']} tokens, got {usage['completion_tokens']}")

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return len(bodies) / wall, latencies


def measure(url: str, bodies: list[dict], concurrency: int) -> dict:
    rate, latencies = asyncio.run(_closed_loop(url, bodies, concurrency))
    ordered = sorted(latencies)
    return {"rps": rate, "p50": statistics.median(ordered),
            "p95": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]}


def run_bench(root: Path, rounds: int, quick: bool = False, max_tokens: int = 32) -> dict:
    """Build the fixture, start both servers, alternate rounds; return the table (medians) and per-round ratios."""
    from weightsmith.workspace import Workspace
    from weightsmith.workspace.registry import register_version

    fixture = quill_fixture(root, n_train=64)
    ws_dir = root / "ws"
    Workspace.init(ws_dir)
    register_version(Workspace.open(ws_dir), "quill", fixture["model"], stage="bench")
    prompts = [json.loads(line)["prompt"] for line in Path(fixture["eval_indist"]).read_text().splitlines()]
    requests = {1: 8, 8: 16, 32: 32} if quick else {1: 24, 8: 64, 32: 128}

    def bodies(concurrency: int, offset: int) -> list[dict]:
        return [{"model": "quill@v1", "messages": prompts[(offset + i) % len(prompts)], "max_tokens": max_tokens,
                 "temperature": 0} for i in range(requests[concurrency])]

    series: dict[str, dict[int, list[dict]]] = {"naive": {c: [] for c in CONCURRENCY},
                                                "batched": {c: [] for c in CONCURRENCY}}
    with ExitStack() as stack:
        urls = {kind: stack.enter_context(serve(ws_dir, kind)) for kind in ("naive", "batched")}
        for kind in urls:  # warm-up: first-request costs (template compilation, allocator) hit neither series
            measure(urls[kind], bodies(8, 0)[:8], 8)
        for r in range(rounds):
            for c in CONCURRENCY:
                for kind in ("naive", "batched"):  # A then B, same prompts
                    series[kind][c].append(measure(urls[kind], bodies(c, r * 7), c))
                    print(f"round {r + 1}/{rounds}, concurrency {c:>2}, {kind:>7}: {series[kind][c][-1]['rps']:6.2f} req/s, "
                          f"p95 {series[kind][c][-1]['p95'] * 1000:6.0f} ms", file=sys.stderr, flush=True)
    table = []
    for c in CONCURRENCY:
        naive, batched = series["naive"][c], series["batched"][c]
        table.append({
            "concurrency": c, "requests": requests[c],
            **{f"{kind}_{key}": statistics.median(m[key] for m in series[kind][c])
               for kind in ("naive", "batched") for key in ("rps", "p50", "p95")},
            "throughput_ratio": statistics.median(b["rps"] / a["rps"] for a, b in zip(naive, batched, strict=True)),
            "p95_ratio": statistics.median(b["p95"] / a["p95"] for a, b in zip(naive, batched, strict=True)),
        })
    return {"max_tokens": max_tokens, "rounds": rounds, "table": table}


def results(measured: dict) -> list[Result]:
    """The two targets as bench results (higher is better: the p95 one is naive p95 / batched p95)."""
    by_c = {row["concurrency"]: row for row in measured["table"]}
    rounds = measured["rounds"]
    at32, at1 = by_c[32], by_c[1]
    return [
        Result(name="serving_throughput_32", what="chat completions over HTTP, 32 concurrent clients, "
               "one generate() per request → continuous batching", unit="req/s", baseline=at32["naive_rps"],
               candidate=at32["batched_rps"], ratio=at32["throughput_ratio"], target=3.0, rounds=rounds,
               details=measured),
        Result(name="serving_p95_1", what="p95 latency at concurrency 1 as naive p95 / batched p95 "
               "(batched no worse than 1.1x)", unit="1/s at p95", baseline=1 / at1["naive_p95"],
               candidate=1 / at1["batched_p95"], ratio=1 / at1["p95_ratio"], target=round(1 / 1.1, 3), rounds=rounds),
    ]


def markdown(measured: dict) -> str:
    lines = ["| concurrency | naive req/s | batched req/s | ratio | naive p50 / p95 (ms) | batched p50 / p95 (ms) | "
             "p95 batched/naive |", "|---|---|---|---|---|---|---|"]
    for row in measured["table"]:
        lines.append(
            f"| {row['concurrency']} | {row['naive_rps']:.2f} | {row['batched_rps']:.2f} | "
            f"{row['throughput_ratio']:.2f}x | {row['naive_p50'] * 1000:,.0f} / {row['naive_p95'] * 1000:,.0f} | "
            f"{row['batched_p50'] * 1000:,.0f} / {row['batched_p95'] * 1000:,.0f} | {row['p95_ratio']:.2f} |")
    return "\n".join(lines)


def bench(root: Path, rounds: int, quick: bool = False) -> list[Result]:
    """The entry ``bench/run.py serving`` calls: measure, print the table to stderr, return the targets."""
    measured = run_bench(root, 1 if quick else rounds, quick=quick)
    print(markdown(measured), file=sys.stderr)
    return results(measured)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--quick", action="store_true", help="one round, a quarter of the requests")
    parser.add_argument("--max-tokens", type=int, default=32, help="new tokens per request (default 32)")
    parser.add_argument("--json", action="store_true", help="print the table as JSON instead of markdown")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        measured = run_bench(Path(tmp), 1 if args.quick else args.rounds, quick=args.quick, max_tokens=args.max_tokens)
    print(json.dumps(measured, indent=2) if args.json else markdown(measured))
    return 0 if all(r.met for r in results(measured)) else 1


if __name__ == "__main__":
    sys.exit(main())
