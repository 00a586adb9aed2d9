"""Preference pairs from a model's own samples, ranked by a reward (online-style DPO data).

For each prompt we sample ``num_samples`` completions from the model, score them with a
registered reward (a verifier), and pair the best as *chosen* with samples that score at least
``min_margin`` less as *rejected* (:func:`rank_pairs`). When no sample is right and the row carries
a reference answer, the reference stands in as *chosen* — the model still learns which of its
own mistakes to avoid. The output is a preference dataset the job system versions, with
provenance (model, reward, sampling settings, counts).

It follows the stage contract of :mod:`weightsmith.training` (``Config`` + ``run``), so it runs
as a job like any training stage.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from weightsmith.training.common import StageContext, StageInputs, prepare_output_dir, read_rows, require_model_dir


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reward: str = Field(description="Registered reward (or module:function) that ranks the samples.")
    num_samples: int = Field(8, ge=2, description="Completions sampled per prompt.")
    temperature: float = Field(1.0, gt=0.0, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling.")
    max_new_tokens: int = Field(64, ge=1, description="Longest completion sampled.")
    batch_size: int = Field(16, ge=1, description="Prompts per generation batch.")
    greedy: bool = Field(
        True,
        description="Also decode each prompt greedily and rank that answer first among equals: what the model "
        "says at evaluation time is then the first rejected answer whenever it is wrong.",
    )
    pairs_per_prompt: int = Field(
        1, ge=1, description="Pairs per prompt: the chosen answer against this many distinct worse samples, best-scoring first."
    )
    min_margin: float = Field(0.5, ge=0.0, description="Keep a pair only when chosen beats rejected by this much.")
    reference_field: str | None = Field(
        "reference", description="Row column whose text can stand in as chosen when every sample fails; null disables."
    )
    max_prompts: int | None = Field(None, ge=1, description="Use at most this many prompts (in dataset order).")
    device: str = Field("auto", description="'auto', 'cpu' or 'cuda'.")


def run(cfg: Config, inputs: StageInputs, ctx: StageContext) -> dict:
    from weightsmith.rewards.contract import call_reward

    rows = read_rows(inputs, "pairs", "prompt")[: cfg.max_prompts]
    model_dir = require_model_dir(inputs, "pairs")
    reward_fn = check_reward(cfg.reward, rows, inputs.data_path)
    prepare_output_dir(ctx)

    from weightsmith.evals.generate import generate

    prompts = [row["prompt"] for row in rows]
    # Each row's tools are rendered with its prompt, and go with its pairs, so DPO sees what was sampled.
    tools = [row.get("tools") for row in rows]
    settings = dict(max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, device=cfg.device, tools=tools)
    generations = generate(model_dir, prompts, temperature=cfg.temperature, top_p=cfg.top_p, seed=ctx.seed,
                           num_samples=cfg.num_samples, **settings)
    greedy = generate(model_dir, prompts, **settings) if cfg.greedy else [None] * len(rows)
    pairs, from_reference, all_correct, solved = [], 0, 0, 0
    for row, gen, first in zip(rows, generations, greedy):
        # Distinct non-empty samples: an empty completion has no message to train on, a repeat adds nothing.
        texts = ([first.text] if first else []) + gen.samples
        samples = list(dict.fromkeys(text for text in texts if text.strip()))
        if not samples:
            continue
        columns = {k: [v] * len(samples) for k, v in row.items() if k != "prompt"}
        scores = call_reward(reward_fn, samples, [row["prompt"]] * len(samples), columns)
        reference = row.get(cfg.reference_field) if cfg.reference_field else None
        solved += max(scores) >= 1.0
        all_correct += min(scores) >= 1.0
        from_reference += bool(reference) and max(scores) < 1.0
        new = rank_pairs(row["prompt"], samples, scores, pairs_per_prompt=cfg.pairs_per_prompt,
                         min_margin=cfg.min_margin, reference=str(reference) if reference else None)
        pairs.extend(_conversational(pair, row.get("tools")) if isinstance(row["prompt"], list) else pair for pair in new)

    out = Path(ctx.output_dir)
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    with open(tmp / "data.jsonl", "w", encoding="utf-8") as fh:
        for pair in pairs:
            fh.write(json.dumps(pair, ensure_ascii=False) + "\n")
    tmp.rename(out)
    stats = {
        "prompts": len(rows),
        "pairs": len(pairs),
        "pairs_from_reference": from_reference,
        "prompts_all_samples_correct": all_correct,
        "prompts_solved_by_a_sample": solved,
    }
    with open(ctx.metrics_path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"step": 0, **{k: float(v) for k, v in stats.items()}}) + "\n")
    return {
        "steps": 0,
        "final_loss": None,
        "train_tokens": 0,
        "resumed_from_step": None,
        "dataset_format": "preference",
        "provenance": {"model": str(model_dir), "reward": cfg.reward, **cfg.model_dump(), **stats},
        **stats,
    }


def check_reward(name: str, rows: list[dict], data_path: object):
    """Look up reward ``name`` and check it against the reward contract on every row; return it.

    Raises:
        UserError: naming the row, the reward, its function and the parameter nothing provides.
    """
    from weightsmith.errors import UserError
    from weightsmith.rewards import get_reward
    from weightsmith.rewards.contract import describe, signature_problem, training_only, unprovided

    reward_fn = get_reward(name)
    problem = signature_problem(reward_fn, name)
    if problem:
        raise UserError(f"{data_path}: {problem}")
    for line_number, row in enumerate(rows, start=1):
        for missing in unprovided(reward_fn, row, training=False):
            what = training_only(missing, training=False) or (
                f"the column '{missing}', which the row lacks (it has: {', '.join(sorted(row))}); add it to every "
                "row, or give the parameter a default"
            )
            raise UserError(f"{data_path}, row {line_number}: reward '{name}' ({describe(reward_fn)}) needs {what}.")
    return reward_fn


def rank_pairs(
    prompt: object,
    samples: Sequence[object],
    scores: Sequence[float],
    *,
    pairs_per_prompt: int = 1,
    min_margin: float = 0.5,
    reference: object | None = None,
    solved: float = 1.0,
) -> list[dict]:
    """Preference pairs for one prompt from its distinct samples and their scores.

    The chosen answer is the best-scoring sample (several equally good ones take turns) — or, when
    no sample reaches ``solved`` and a ``reference`` is given, the reference. The rejected ones are
    the samples that lose to it by at least ``min_margin``, best-scoring first: a program that runs
    but computes the wrong thing teaches more than gibberish does. At most ``pairs_per_prompt``.
    """
    order = sorted(range(len(samples)), key=lambda i: -scores[i])  # stable: ties keep sample order
    top = scores[order[0]] if order else 0.0
    if reference is not None and top < solved:
        chosen, chosen_score = [reference], solved
    else:
        chosen, chosen_score = [samples[i] for i in order if scores[i] == top], top
    rejected = [samples[i] for i in order if chosen_score - scores[i] >= min_margin]
    return [
        {"prompt": prompt, "chosen": chosen[k % len(chosen)], "rejected": bad}
        for k, bad in enumerate(rejected[:pairs_per_prompt])
    ]


def _conversational(pair: dict, tools: list | None = None) -> dict:
    """Completions as one assistant message each, to go with a chat prompt (and the tools it was rendered with)."""
    replies = {k: [{"role": "assistant", "content": pair[k]}] for k in ("chosen", "rejected")}
    return {"prompt": pair["prompt"], **replies, **({"tools": tools} if tools else {})}
