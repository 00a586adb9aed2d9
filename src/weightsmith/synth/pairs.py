"""Preference pairs from a model's own samples, ranked by a reward (online-style DPO data).

For each prompt we sample ``num_samples`` completions from the model, score them with a
registered reward (a verifier), and keep the best as *chosen* and the worst as *rejected* when
their scores differ by at least ``min_margin``. When every sample fails and the row carries a
reference answer, the reference can stand in as *chosen* — the model still learns which of
its own mistakes to avoid. The output is a preference dataset the job system versions, with
provenance (model, reward, sampling settings, counts).

It follows the stage contract of :mod:`weightsmith.training` (``Config`` + ``run``), so it runs
as a job like any training stage.
"""

from __future__ import annotations

import json
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
    min_margin: float = Field(0.5, ge=0.0, description="Keep a pair only when chosen beats rejected by this much.")
    reference_field: str | None = Field(
        "reference", description="Row column whose text can stand in as chosen when every sample fails; null disables."
    )
    max_prompts: int | None = Field(None, ge=1, description="Use at most this many prompts (in dataset order).")
    device: str = Field("auto", description="'auto', 'cpu' or 'cuda'.")


def run(cfg: Config, inputs: StageInputs, ctx: StageContext) -> dict:
    rows = read_rows(inputs, "pairs", "prompt")[: cfg.max_prompts]
    model_dir = require_model_dir(inputs, "pairs")
    prepare_output_dir(ctx)

    from weightsmith.evals.generate import generate
    from weightsmith.rewards import get_reward

    reward_fn = get_reward(cfg.reward)
    generations = generate(
        model_dir,
        [row["prompt"] for row in rows],
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        seed=ctx.seed,
        num_samples=cfg.num_samples,
        device=cfg.device,
    )
    pairs, from_reference, all_correct, solved = [], 0, 0, 0
    for row, gen in zip(rows, generations):
        samples = gen.samples
        columns = {k: [v] * len(samples) for k, v in row.items() if k != "prompt"}
        scores = reward_fn(samples, **columns)
        best, worst = max(range(len(samples)), key=scores.__getitem__), min(range(len(samples)), key=scores.__getitem__)
        solved += scores[best] >= 1.0
        if scores[best] - scores[worst] >= cfg.min_margin:
            chosen = samples[best]
        elif scores[best] < 1.0 and cfg.reference_field and row.get(cfg.reference_field):
            # Every sample failed: the reference is the chosen answer, the worst sample the rejected one.
            chosen = str(row[cfg.reference_field])
            from_reference += 1
        else:
            all_correct += scores[worst] >= 1.0
            continue
        if chosen.strip() == samples[worst].strip():
            continue
        pairs.append(_pair(row["prompt"], chosen, samples[worst]))

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


def _pair(prompt, chosen: str, rejected: str) -> dict:
    if isinstance(prompt, list):  # conversational prompt -> conversational completions
        return {
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
        }
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
