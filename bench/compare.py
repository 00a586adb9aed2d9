"""Benches against what users would pick instead: the hardware's peak, a hand-written PyTorch loop, TRL's
trainers at their defaults, one-at-a-time ``generate()``, and how the cost grows with model and data.

    .venv/bin/python bench/run.py --quick                      # every bench, the small workloads
    .venv/bin/python bench/run.py pretrain sft --json          # some of them, full size, JSON last

Each weightsmith side runs the stage's own code (``pretrain.run``, ``sft.run``, ``dpo.run``, ``grpo.run``,
``evals.run.compute_suite``, ``data.ingest.add_dataset``); each reference side is what a user would write
instead, with the pinned transformers/TRL, on the same model, data and torch threads, in the same process.
Variants alternate (A B C A B C ...); a ratio is the median of the per-round ratios.

Trainer throughput is measured the same way for both sides: a clock on ``MetricsCallback.on_step_end``
(every stage attaches that callback; the reference trainers get one too) records time, step and the
Trainer's ``num_input_tokens_seen`` after every optimizer step, and the first ``WARMUP_STEPS`` steps
(lazy imports, allocator, first-batch tokenization) are left out. "Effective" tokens are non-padding
input tokens (the Trainer's ``include_num_input_tokens_seen="non_padding"``, set on both sides).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import math
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import Result, quill_fixture, summarize  # noqa: E402  (bench/ is not a package)

WARMUP_STEPS = 2  # optimizer steps left out of every throughput measurement


@dataclass(frozen=True)
class Workload:
    """How big each bench runs: ``FULL`` for ``make bench``, ``QUICK`` for ``--quick``, ``MINIMAL`` for the tests."""

    peak_n: int = 2048  # square matmul for the peak
    pretrain_size: str = "base"  # the MFU model: its matmuls dominate
    pretrain_steps: int = 8
    seq_len: int = 128
    batch: int = 8
    chats: int = 512  # SFT conversations
    sft_packing: bool = True  # also measure TRL's packing (slow on a CPU: see bench_sft)
    sft_steps: int = 10
    pairs: int = 256  # DPO pairs
    rl_steps: int = 5  # DPO and GRPO optimizer steps
    completion_tokens: int = 64  # GRPO max_completion_length
    eval_rows: int = 64
    eval_new_tokens: int = 64
    scale_sizes: tuple[str, ...] = ("tiny", "small", "base")
    scale_steps: int = 6
    scale_rows: tuple[int, ...] = (1_000, 10_000, 100_000)


FULL = Workload()
QUICK = Workload(peak_n=1024, pretrain_size="small", pretrain_steps=6, chats=128, sft_steps=5, sft_packing=False,
                 pairs=64, rl_steps=4, completion_tokens=32, eval_rows=32, eval_new_tokens=32,
                 scale_sizes=("tiny", "small"), scale_steps=5, scale_rows=(1_000, 10_000))
MINIMAL = Workload(peak_n=256, pretrain_size="tiny", pretrain_steps=4, seq_len=32, batch=4, chats=32, sft_steps=4,
                   sft_packing=False, pairs=16, rl_steps=4, completion_tokens=8, eval_rows=8, eval_new_tokens=8,
                   scale_sizes=("tiny",), scale_steps=4, scale_rows=(200, 400))


def workload(quick: bool, given: Workload | None) -> Workload:
    return given if given is not None else (QUICK if quick else FULL)


# --- shared fixture: built once per process -----------------------------------------------------------

_FIXTURES: dict[int, dict] = {}


def fixture(n_train: int = 512) -> dict:
    """The Quill fixture of ``bench/run.py`` (``small`` model), built once per process and reused by every bench."""
    if n_train not in _FIXTURES:
        root = Path(tempfile.mkdtemp(prefix="bench-compare-"))
        atexit.register(shutil.rmtree, root, True)
        _FIXTURES[n_train] = quill_fixture(root, n_train=n_train)
    return _FIXTURES[n_train]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path | str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def spread_chats(n: int, seed: int = 0) -> list[dict]:
    """``n`` multi-turn chats of 1-7 Quill exchanges each (log-normal, median 2): a long-tailed length spread like
    real chat logs (28 to 469 tokens, median 110, with the fixture's tokenizer; each fits the stages' max_length
    512) instead of Quill's near-uniform one-exchange chats."""
    rng = random.Random(seed)
    exchanges = [row["messages"] for row in read_jsonl(fixture()["tasks_train"])]
    chats = []
    for _ in range(n):
        turns = min(7, max(1, round(rng.lognormvariate(math.log(2), 0.7))))
        chats.append({"messages": [m for _ in range(turns) for m in rng.choice(exchanges)]})
    return chats


def stage_paths(root: Path) -> dict:
    """StageContext keyword arguments for a fresh run under ``root``."""
    return {"work_dir": root / "work", "output_dir": root / "out", "seed": 0,
            "metrics_path": root / "metrics.jsonl", "result_path": root / "result.json"}


def run_stage(root: Path, stage: str, data: Path, data_format: str, steps: int, batch: int, **settings) -> Marks:
    """Stage ``stage`` (a module of weightsmith.training) on ``data`` from the fixture's model (pretrain: its
    tokenizer), ``settings`` on top of the stage's defaults; the step clock of its run."""
    import importlib

    from weightsmith.training.common import StageContext, StageInputs

    module = importlib.import_module(f"weightsmith.training.{stage}")
    start = {"tokenizer_path" if stage == "pretrain" else "model_path": fixture()["model"]}
    inputs = StageInputs(data_path=data, data_format=data_format, **start)
    cfg = module.Config(batch_size=batch, max_steps=steps, logging_steps=steps, save_steps=10**6, device="cpu",
                        **settings)
    with step_clock() as marks:
        module.run(cfg, inputs, StageContext(**stage_paths(fresh_dir(root, stage))))
    return marks


# --- the clock every trainer-based bench reads ---------------------------------------------------------

@dataclass
class Marks:
    """(seconds, global step, tokens seen) after each optimizer step of one run."""

    points: list[tuple[float, int, int]]

    def steady(self) -> list[tuple[float, int, int]]:
        if len(self.points) <= WARMUP_STEPS + 1:
            raise RuntimeError(f"a throughput run needs more than {WARMUP_STEPS + 1} steps, got {len(self.points)}")
        return self.points[WARMUP_STEPS:]

    def seconds_per_step(self) -> float:
        points = self.steady()
        return statistics.median(b[0] - a[0] for a, b in itertools.pairwise(points))

    def tokens_per_second(self) -> float:
        (t0, _, k0), (t1, _, k1) = self.steady()[0], self.steady()[-1]
        return (k1 - k0) / (t1 - t0)


@contextlib.contextmanager
def step_clock() -> Iterator[Marks]:
    """Record every optimizer step of the trainers that carry a ``MetricsCallback`` (every stage's does)."""
    from weightsmith.training.callbacks import MetricsCallback

    marks = Marks([])

    def on_step_end(self, args, state, control, **kwargs):
        marks.points.append((time.perf_counter(), state.global_step, int(state.num_input_tokens_seen)))

    with mock.patch.object(MetricsCallback, "on_step_end", on_step_end):
        yield marks


def reference_args(root: Path, steps: int, batch: int, **overrides) -> dict:
    """What a reference trainer needs to run here and be measured like a stage; every other setting is TRL's default."""
    return dict(output_dir=str(root / "checkpoints"), max_steps=steps, per_device_train_batch_size=batch,
                report_to="none", save_strategy="no", logging_steps=steps, use_cpu=True, disable_tqdm=True,
                include_num_input_tokens_seen="non_padding", **overrides)


def run_reference(trainer_cls, root: Path, **kwargs) -> Marks:
    """Build a TRL/transformers trainer with a metrics callback and train it under the step clock."""
    from weightsmith.training.callbacks import MetricsCallback

    with step_clock() as marks:
        trainer = trainer_cls(callbacks=[MetricsCallback(root / "metrics.jsonl")], **kwargs)
        trainer.train()
    return marks


def rounds_of(variants: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Each variant once per round, in the same order every round (A B C A B C ...).

    No separate warm-up run: every measurement here leaves its own first steps out (``WARMUP_STEPS``) or
    runs warm (the eval bench loads its model once before the first round).
    """
    series: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, measure in variants.items():
            series[name].append(measure())
    return series


def fresh_dir(root: Path, name: str, counter=itertools.count()) -> Path:  # noqa: B008  (one counter per process)
    path = root / f"{name}-{next(counter)}"
    path.mkdir(parents=True)
    return path


# --- 1. the hardware's peak ---------------------------------------------------------------------------

_PEAK: dict[tuple[int, int, str], float] = {}


def training_dtype() -> str:
    """The dtype the stages train in here at ``dtype: auto`` on the CPU: bfloat16 where the CPU multiplies bf16
    natively, else float32 (:func:`weightsmith.training.common.resolve_precision`). Every side of a bench
    trains in it, and MFU is over the peak of its matmuls."""
    from weightsmith.training.common import resolve_precision

    return resolve_precision("cpu").dtype


def peak_flops(n: int, reps: int = 20, dtype: str = "float32") -> float:
    """Best FLOP/s of an ``n x n`` matmul in ``dtype`` (2n³ FLOPs) over ``reps`` tries, at torch's current threads.

    Best, not median: on a shared machine a try that loses the core is not the hardware's limit. Every call
    measures again and keeps the best of all calls so far, so a bench that calls it after its runs (pretrain)
    does not divide by a peak taken at a busy moment."""
    import torch

    key = (n, torch.get_num_threads(), dtype)
    a, b = torch.randn(n, n, dtype=getattr(torch, dtype)), torch.randn(n, n, dtype=getattr(torch, dtype))
    torch.mm(a, b)
    best = math.inf
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    _PEAK[key] = max(_PEAK.get(key, 0.0), 2 * n**3 / best)
    return _PEAK[key]


def bench_peak(root: Path, rounds: int, quick: bool = False, load: Workload | None = None) -> list[Result]:
    """Peak matmul GFLOP/s in fp32 and, where the stages train in it, bf16 (the MFU denominator)."""
    import torch

    n = workload(quick, load).peak_n
    dtypes = ["float32"] + (["bfloat16"] if training_dtype() == "bfloat16" else [])
    short = {"float32": "fp32", "bfloat16": "bf16"}
    return [Result(name=f"peak_matmul_{short[d]}", what=f"best {n}x{n} {short[d]} torch.mm, {torch.get_num_threads()} "
                   f"threads{' (the MFU denominator)' if d == training_dtype() else ''}", unit="GFLOP/s",
                   baseline=None, candidate=peak_flops(n, dtype=d) / 1e9, ratio=None, target=None, rounds=rounds)
            for d in dtypes]


# --- 2. pretraining vs a hand-written loop -------------------------------------------------------------

def matmul_params(model) -> int:
    """Weights that take part in a matmul per token (every nn.Linear, the LM head included): the N of 6·N·tokens.
    The input embedding is a lookup (it counts only when tied to the head, as the head); attention's own
    score/value FLOPs (~12·layers·seq·hidden per token) are left out, as in the usual MFU."""
    import torch

    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def manual_texts() -> list[dict]:
    manual = Path(fixture()["manual"])
    return [{"text": p.read_text(encoding="utf-8")} for p in sorted(manual.rglob("*")) if p.is_file()]


def pretrain_stage(root: Path, size: str, steps: int, seq_len: int, batch: int) -> Marks:
    """The pretrain stage on the Quill manual; the step clock of its run."""
    data = write_jsonl(fresh_dir(root, "text") / "text.jsonl", manual_texts())
    return run_stage(root, "pretrain", data, "text", steps, batch, size=size, seq_len=seq_len)


def hand_loop(size: str, steps: int, seq_len: int, batch: int) -> tuple[Marks, int]:
    """The practical limit: the same Llama, AdamW and clipping in a plain PyTorch loop (no Trainer, no logging),
    in the stage's precision (bf16 autocast over fp32 weights where the stage trains in bf16).

    Returns the clock and the model's matmul parameters."""
    import torch
    from transformers import AutoTokenizer, set_seed

    from weightsmith.training.models import build_model

    tokenizer = AutoTokenizer.from_pretrained(fixture()["model"])
    set_seed(0)
    model = build_model(size, tokenizer, max_positions=max(seq_len, 512))
    model.train()
    ids = [t for row in manual_texts() for t in tokenizer(row["text"])["input_ids"] + [tokenizer.eos_token_id]]
    blocks = torch.tensor(ids[: len(ids) // seq_len * seq_len]).view(-1, seq_len)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    marks, seen = Marks([]), 0
    bf16 = training_dtype() == "bfloat16"
    for step in range(steps):
        x = blocks[torch.arange(step * batch, (step + 1) * batch) % len(blocks)]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seen += x.numel()
        marks.points.append((time.perf_counter(), step + 1, seen))
    return marks, matmul_params(model)


def bench_pretrain(root: Path, rounds: int, quick: bool = False, load: Workload | None = None) -> list[Result]:
    """Pretrain tokens/s vs a hand-written loop (target 0.9x), and MFU over the measured peak (target 70%)."""
    w = workload(quick, load)
    shape = dict(size=w.pretrain_size, steps=w.pretrain_steps, seq_len=w.seq_len, batch=w.batch)
    params: list[int] = []

    def loop() -> float:
        marks, n = hand_loop(**shape)
        params.append(n)
        return marks.tokens_per_second()

    series = rounds_of({"loop": loop, "stage": lambda: pretrain_stage(root, **shape).tokens_per_second()}, rounds)
    dtype = training_dtype()
    peak = peak_flops(w.peak_n, dtype=dtype)
    n = params[0]
    mfu = [6 * n * t / peak for t in series["stage"]]
    loop_mfu = statistics.median(6 * n * t / peak for t in series["loop"])
    what = f"'{w.pretrain_size}' Llama ({n / 1e6:.1f}M matmul params), batch {w.batch} x {w.seq_len} tokens, {dtype}"
    return [
        summarize("pretrain_tokens_per_s", f"pretrain stage vs a hand-written PyTorch loop: {what}", "tokens/s", 0.9,
                  series["loop"], series["stage"]),
        summarize("pretrain_mfu", f"pretrain stage 6·N·tokens/s over the measured {dtype} peak {peak / 1e9:,.0f} GFLOP/s "
                  f"(the hand loop: {loop_mfu:.1%}); {what}", "fraction of peak", 0.7, [1.0] * len(mfu), mfu),
    ]


# --- 3. SFT vs TRL's SFTTrainer ----------------------------------------------------------------------

def sft_stage(root: Path, chats: Path, steps: int, batch: int) -> Marks:
    """The sft stage at its defaults (padding-free, assistant-only loss) on ``chats``."""
    return run_stage(root, "sft", chats, "chat", steps, batch)


def load_model(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype="float32")


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def tuned() -> dict:
    """TRL's settings a user would change on this CPU: activation checkpointing off, and bf16 autocast (TRL's
    default) kept only where the CPU multiplies bf16 natively — the precision the stages pick here."""
    return {"bf16": training_dtype() == "bfloat16", "gradient_checkpointing": False}


def trl_sft(root: Path, chats: Path, steps: int, batch: int, **settings) -> Marks:
    """TRL's SFTTrainer on the same chats and model; ``settings`` on top of SFTConfig's defaults."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    base = fresh_dir(root, "trl-sft")
    args = SFTConfig(**reference_args(base, steps, batch, **settings))
    return run_reference(SFTTrainer, base, model=load_model(fixture()["model"]), args=args,
                         train_dataset=Dataset.from_list(read_jsonl(chats)),
                         processing_class=load_tokenizer(fixture()["model"]))


def bench_sft(root: Path, rounds: int, quick: bool = False, load: Workload | None = None) -> list[Result]:
    """Effective (non-padding) SFT tokens/s: the sft stage vs TRL defaults (target 1.5x) and TRL packed (1.0x)."""
    w = workload(quick, load)
    chats = write_jsonl(root / "chats.jsonl", spread_chats(w.chats))
    shape = dict(chats=chats, steps=w.sft_steps, batch=w.batch)
    variants = {
        "trl_default": lambda: trl_sft(root, **shape).tokens_per_second(),
        # TRL tuned for this machine: TRL 1.16 defaults to bf16 autocast (slow on a CPU without native bf16) and
        # activation checkpointing (off here). TRL refuses max_length with padding_free and no packing (it would
        # not enforce it); none of these chats reaches its default 1024.
        "trl_padding_free": lambda: trl_sft(root, padding_free=True, max_length=None, **tuned(), **shape)
        .tokens_per_second(),
        # Packing fills rows of max_length (1024) and flattens the batch into one 8k-token row, whose SDPA
        # attention (no flash-attention on a CPU) is quadratic in the row: too slow for --quick.
        **({} if w.sft_packing is False else {"trl_packed": lambda: trl_sft(root, packing=True, **tuned(), **shape)
                                              .tokens_per_second()}),
        "stage": lambda: sft_stage(root, **shape).tokens_per_second(),
    }
    series = rounds_of(variants, rounds)
    best = [max(values) for values in zip(*(series[k] for k in ("trl_padding_free", "trl_packed") if k in series))]
    what = f"{w.chats} Quill chats of 1-7 exchanges, batch {w.batch}, 'small' model"
    tried = ("padding_free=True" + (" or packing=True (BFD), the faster per round" if "trl_packed" in series else "")
             + f", {training_dtype()}, no activation checkpointing")
    results = [
        summarize("sft_vs_trl_default", f"sft stage vs TRL SFTTrainer at its defaults (padded, bf16 autocast, "
                  f"activation checkpointing): {what}", "tokens/s", 1.5, series["trl_default"], series["stage"]),
        summarize("sft_vs_trl_best", f"sft stage vs TRL SFTTrainer with {tried}: {what}", "tokens/s", 1.0, best,
                  series["stage"]),
    ]
    results[1].details = {name: statistics.median(values) for name, values in series.items()}
    return results


# --- 4. DPO and GRPO vs TRL's trainers ---------------------------------------------------------------

def preference_pairs(n: int, seed: int = 0) -> list[dict]:
    """Conversational pairs from Quill tasks: the right program is chosen, another task's program rejected."""
    rng = random.Random(seed)
    rows = read_jsonl(fixture()["tasks_train"])
    pairs = []
    for row in rows[:n]:
        other = rng.choice(rows)["messages"][-1]["content"]
        pairs.append({"prompt": row["messages"][:-1], "chosen": [row["messages"][-1]],
                      "rejected": [{"role": "assistant", "content": other}]})
    return pairs


def dpo_stage(root: Path, pairs: Path, steps: int, batch: int) -> Marks:
    return run_stage(root, "dpo", pairs, "preference", steps, batch)


def trl_dpo(root: Path, pairs: Path, steps: int, batch: int) -> Marks:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    base = fresh_dir(root, "trl-dpo")
    return run_reference(DPOTrainer, base, model=load_model(fixture()["model"]),
                         args=DPOConfig(**reference_args(base, steps, batch)),
                         train_dataset=Dataset.from_list(read_jsonl(pairs)),
                         processing_class=load_tokenizer(fixture()["model"]))


@contextlib.contextmanager
def rollout_clock() -> Iterator[list[tuple[float, float, int]]]:
    """(start, end, completion tokens) of every generation call of every GRPOTrainer (the stage's subclass too)."""
    from trl import GRPOTrainer

    original = GRPOTrainer._generate_single_turn
    calls: list[tuple[float, float, int]] = []

    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        out = original(self, *args, **kwargs)
        calls.append((start, time.perf_counter(), sum(len(ids) for ids in out[0])))  # out: (completion ids, logprobs)
        return out

    with mock.patch.object(GRPOTrainer, "_generate_single_turn", timed):
        yield calls


@dataclass
class GrpoRun:
    seconds_per_step: float
    generation_share: float
    rollout_tokens_per_s: float


def grpo_measure(run: Callable[[], Marks]) -> GrpoRun:
    """Step time, generation's share of the steady steps and rollout tokens/s of one GRPO run.

    TRL generates at the start of the step that needs the rollouts, so the generation calls that start after
    the steady window opens (the end of step ``WARMUP_STEPS + 1``) belong to the steady steps."""
    with rollout_clock() as calls:
        marks = run()
    steady = marks.steady()
    opened, closed = steady[0][0], steady[-1][0]
    inside = [(start, end, tokens) for start, end, tokens in calls if opened <= start < closed]
    seconds = sum(end - start for start, end, _ in inside)
    return GrpoRun(marks.seconds_per_step(), seconds / (closed - opened), sum(t for *_, t in inside) / seconds)


def prompt_rows(n: int) -> list[dict]:
    return read_jsonl(fixture()["prompts_train"])[:n]


def grpo_stage(root: Path, prompts: Path, steps: int, batch: int, completion_tokens: int) -> Marks:
    return run_stage(root, "grpo", prompts, "prompt", steps, batch, reward="quill_exec",
                     max_completion_length=completion_tokens)


def trl_grpo(root: Path, prompts: Path, steps: int, batch: int, completion_tokens: int) -> Marks:
    """GRPOTrainer at its defaults, with the stage's batch, group size and completion length (the work per step)."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from weightsmith.training import grpo

    base = fresh_dir(root, "trl-grpo")
    rows = read_jsonl(prompts)
    stage_defaults = grpo.Config(batch_size=batch)
    args = GRPOConfig(**reference_args(base, steps, batch, num_generations=stage_defaults.num_generations,
                                       max_completion_length=completion_tokens))
    return run_reference(GRPOTrainer, base, model=load_model(fixture()["model"]), args=args,
                         reward_funcs=grpo.resolve_rewards(["quill_exec"], rows, prompts),
                         train_dataset=Dataset.from_list(rows), processing_class=load_tokenizer(fixture()["model"]))


def bench_rl(root: Path, rounds: int, quick: bool = False, load: Workload | None = None) -> list[Result]:
    """DPO and GRPO step time vs TRL at its defaults; GRPO rollout tokens/s (target 2x) and generation share."""
    w = workload(quick, load)
    pairs = write_jsonl(root / "pairs.jsonl", preference_pairs(w.pairs))
    prompts = write_jsonl(root / "prompts.jsonl", prompt_rows(w.pairs))
    dpo_shape = dict(pairs=pairs, steps=w.rl_steps, batch=w.batch)
    grpo_shape = dict(prompts=prompts, steps=w.rl_steps, batch=w.batch, completion_tokens=w.completion_tokens)
    grpo_runs: dict[str, list[GrpoRun]] = {"trl": [], "stage": []}

    def grpo_variant(kind: str, run: Callable[..., Marks]) -> Callable[[], float]:
        def measure() -> float:
            grpo_runs[kind].append(grpo_measure(lambda: run(root, **grpo_shape)))
            return grpo_runs[kind][-1].seconds_per_step
        return measure

    series = rounds_of({
        "trl_dpo": lambda: trl_dpo(root, **dpo_shape).seconds_per_step(),
        "dpo": lambda: dpo_stage(root, **dpo_shape).seconds_per_step(),
        "trl_grpo": grpo_variant("trl", trl_grpo),
        "grpo": grpo_variant("stage", grpo_stage),
    }, rounds)
    group = f"batch {w.batch}, 4 completions per prompt, {w.completion_tokens} new tokens, 'small' model"
    trl_rate = [r.rollout_tokens_per_s for r in grpo_runs["trl"]]
    stage_rate = [r.rollout_tokens_per_s for r in grpo_runs["stage"]]
    share = summarize("grpo_generation_share", f"share of a GRPO step spent generating, stage vs TRL; {group}",
                      "fraction of step", None, [r.generation_share for r in grpo_runs["trl"]],
                      [r.generation_share for r in grpo_runs["stage"]])
    share.ratio = None  # a share is a diagnosis, not a speed
    return [
        summarize("dpo_step", f"dpo stage vs TRL DPOTrainer at its defaults: {w.pairs} Quill pairs, batch {w.batch}",
                  "s/step", None, series["trl_dpo"], series["dpo"], lower_is_better=True),
        summarize("grpo_step", f"grpo stage vs TRL GRPOTrainer at its defaults: {group}", "s/step", None,
                  series["trl_grpo"], series["grpo"], lower_is_better=True),
        summarize("grpo_rollout_tokens_per_s", f"completion tokens generated per second of generation; {group}",
                  "tokens/s", 2.0, trl_rate, stage_rate),
        share,
    ]


# --- 5. evaluation: a KPI suite vs one generate() per example ------------------------------------------

def bench_eval(root: Path, rounds: int, quick: bool = False, load: Workload | None = None) -> list[Result]:
    """Examples/s of a two-KPI Quill suite (compute_suite) vs model.generate() one example at a time (target 5x)."""
    import torch

    from weightsmith.evals.generate import clear_model_cache
    from weightsmith.evals.run import _render_all, _score, compute_suite, prepare_suite
    from weightsmith.evals.suite import load_suite
    from weightsmith.workspace import Workspace

    w = workload(quick, load)
    rows = read_jsonl(fixture()["eval_indist"])[: w.eval_rows]
    data = write_jsonl(root / "eval.jsonl", rows)
    suite = load_suite({"name": "bench", "generation": {"max_new_tokens": w.eval_new_tokens}, "kpis": {
        "exec_accuracy": {"path": str(data), "format": "prompt", "metric": "quill_exec_match"},
        "parse_rate": {"path": str(data), "format": "prompt", "metric": "quill_parses"},
    }}, base_dir=root)
    prepared = prepare_suite(Workspace.init(root / "ws"), suite)
    model_path = str(fixture()["model"])
    model, tokenizer = load_model(fixture()["model"]), load_tokenizer(fixture()["model"])
    model.eval()

    def suite_rate() -> float:
        start = time.perf_counter()
        outcomes = compute_suite(prepared, model_path, device="cpu")
        assert all(o.n == len(rows) for o in outcomes)
        return len(rows) / (time.perf_counter() - start)

    def one_at_a_time() -> float:
        start = time.perf_counter()
        completions = []
        for prompt in _render_all(suite.kpis["exec_accuracy"], rows, "bench"):
            ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt",
                                                return_dict=True)
            with torch.no_grad():
                out = model.generate(**ids, max_new_tokens=w.eval_new_tokens, do_sample=False)
            completions.append(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
        prompts = [row["prompt"] for row in rows]
        for kpi in suite.kpis.values():
            _score(kpi, completions, prompts, rows, "bench")
        return len(rows) / (time.perf_counter() - start)

    suite_rate(), one_at_a_time()  # warm: the suite's model cache, the first generate()
    series = rounds_of({"naive": one_at_a_time, "suite": suite_rate}, rounds)
    clear_model_cache()
    return [summarize("eval_suite", f"2 generation KPIs on {len(rows)} Quill prompts, {w.eval_new_tokens} new tokens: "
                      "compute_suite vs one model.generate() per example", "examples/s", 5.0,
                      series["naive"], series["suite"])]


# --- 7. scaling: model size and data size --------------------------------------------------------------

def bench_scale_model(root: Path, rounds: int, quick: bool = False, load: Workload | None = None) -> list[Result]:
    """Pretrain seconds per step as the model grows (batch and sequence fixed); growth vs the previous size."""
    import torch

    from weightsmith.training.models import build_model

    w = workload(quick, load)
    tokenizer = load_tokenizer(fixture()["model"])
    results, previous = [], None
    for size in w.scale_sizes:
        steps = [pretrain_stage(root, size, w.scale_steps, w.seq_len, w.batch).seconds_per_step()
                 for _ in range(rounds)]
        with torch.device("meta"):
            n = matmul_params(build_model(size, tokenizer, max_positions=512))
        seconds = statistics.median(steps)
        growth = "" if previous is None else (f"; {n / previous[0]:.1f}x the params of the previous size, "
                                              f"{seconds / previous[1]:.1f}x its step time")
        what = f"pretrain '{size}' ({n / 1e6:.2f}M matmul params), batch {w.batch} x {w.seq_len} tokens{growth}"
        results.append(Result(name=f"scale_model_{size}", what=what, unit="s/step", baseline=None, candidate=seconds,
                              ratio=None, target=None, rounds=rounds, lower_is_better=True,
                              details={"matmul_params": n, "tokens_per_step": w.batch * w.seq_len}))
        previous = (n, seconds)
    return results


def scaled_chats(n: int) -> list[dict]:
    """``n`` distinct one-exchange chats (Quill tasks, numbered so none repeats)."""
    exchanges = [row["messages"] for row in read_jsonl(fixture()["tasks_train"])]
    return [{"messages": [{**m, "content": f"{m['content']} #{i}"} if m["role"] == "user" else m
                          for m in exchanges[i % len(exchanges)]]} for i in range(n)]


def data_phases(root: Path, n: int) -> dict[str, float]:
    """Seconds to validate, ingest (validate + version + store) and tokenize (prepare_sft) ``n`` chat rows."""
    from weightsmith.data.chat import ChatRenderer
    from weightsmith.data.chat_prepare import prepare_sft
    from weightsmith.data.formats import validate
    from weightsmith.data.ingest import add_dataset
    from weightsmith.workspace import Workspace

    base = fresh_dir(root, f"rows-{n}")
    path = write_jsonl(base / "chats.jsonl", scaled_chats(n))
    ws = Workspace.init(base / "ws")
    tokenizer = load_tokenizer(fixture()["model"])
    renderer = ChatRenderer.for_training(tokenizer, fixture()["model"], True)
    seconds = {}
    start = time.perf_counter()
    rows = validate(path, "chat").rows
    seconds["validate"] = time.perf_counter() - start
    start = time.perf_counter()
    add_dataset(ws, "chats", path, "chat")
    seconds["ingest"] = time.perf_counter() - start
    start = time.perf_counter()
    prepare_sft(rows, renderer, max_length=512, assistant_only_loss=True, max_truncated_fraction=0.05, data_path=path)
    seconds["tokenize"] = time.perf_counter() - start
    shutil.rmtree(base)
    return seconds


def bench_scale_data(root: Path, rounds: int, quick: bool = False, load: Workload | None = None) -> list[Result]:
    """Rows/s of validation, ingestion and tokenization as the data grows; the ratio is rows/s at that size
    over rows/s at the smallest (1.0 = linear cost; below 1, each row costs more as the data grows)."""
    w = workload(quick, load)
    measured = {n: [data_phases(root, n) for _ in range(rounds)] for n in w.scale_rows}
    smallest = w.scale_rows[0]
    results = []
    for phase in ("validate", "ingest", "tokenize"):
        first = [smallest / run[phase] for run in measured[smallest]]
        for n in w.scale_rows:
            rates = [n / run[phase] for run in measured[n]]
            result = summarize(f"scale_data_{phase}_{n // 1000}k" if n >= 1000 else f"scale_data_{phase}_{n}",
                               f"{phase} {n:,} chat rows; ratio = rows/s here over rows/s at {smallest:,}", "rows/s",
                               None, first, rates)
            results.append(replace(result, baseline=None) if n == smallest else result)
    return results


BENCHES: dict[str, Callable[..., list[Result]]] = {
    "peak": bench_peak,
    "pretrain": bench_pretrain,
    "sft": bench_sft,
    "rl": bench_rl,
    "eval": bench_eval,
    "scale_model": bench_scale_model,
    "scale_data": bench_scale_data,
}
