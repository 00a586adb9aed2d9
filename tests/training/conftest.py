"""Fixtures for the training tests: a tiny corpus, tokenizer and model, built once per session.

Everything is built here from configs and a few synthetic lines — nothing is downloaded.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from training.training_helpers import PRETRAIN_CONFIG, StageRun, run_stage, write_jsonl

WORDS = (
    "the dispatcher sends a truck to the north depot while the driver checks the route and "
    "logs every parcel before noon"
).split()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """Tiny datasets of every format, in the normalized JSONL the runner receives."""
    base = tmp_path_factory.mktemp("data")
    rng = random.Random(0)
    write_jsonl(
        base / "text.jsonl",
        [{"text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 30)))} for _ in range(120)],
    )
    write_jsonl(
        base / "chat.jsonl",
        [
            {
                "messages": [
                    {"role": "system", "content": "You are the dispatch desk."},
                    {"role": "user", "content": f"Which depot gets truck {n}?"},
                    {"role": "assistant", "content": f"Truck {n} goes to the {'north' if n % 2 else 'south'} depot."},
                ]
            }
            for n in range(16)
        ],
    )
    write_jsonl(
        base / "preference.jsonl",
        [
            {
                "prompt": [{"role": "user", "content": f"Route for parcel {n}?"}],
                "chosen": [{"role": "assistant", "content": f"Parcel {n} rides the north route."}],
                "rejected": [{"role": "assistant", "content": "No idea."}],
            }
            for n in range(8)
        ],
    )
    write_jsonl(
        base / "prompt.jsonl",
        [{"prompt": [{"role": "user", "content": f"Depot for truck {n}?"}], "answer": "north"} for n in range(8)],
    )
    return base


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, data_dir: Path) -> Path:
    from weightsmith.data.tokenizer import train_tokenizer

    texts = [json.loads(line)["text"] for line in (data_dir / "text.jsonl").read_text().splitlines()]
    tokenizer = train_tokenizer(texts, vocab_size=320, min_frequency=1)
    path = tmp_path_factory.mktemp("tokenizer")
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer_dir: Path) -> Path:
    """A freshly initialized tiny Llama with our tokenizer: the input model of the fine-tuning stages."""
    import torch
    from transformers import AutoTokenizer

    from weightsmith.training.models import build_model

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    model = build_model("tiny", tokenizer, max_positions=256)
    path = tmp_path_factory.mktemp("tiny_model")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def reward_module_dir(tmp_path_factory) -> Path:
    """A user reward module (``package.module:function``) that scores length, so rewards vary within a group."""
    path = tmp_path_factory.mktemp("user_rewards")
    (path / "length_rewards.py").write_text(
        "from weightsmith.rewards import completion_text\n\n"
        "def longer_is_better(completions, **_):\n"
        "    return [len(completion_text(c)) / 10.0 for c in completions]\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="session")
def pretrain_run(tmp_path_factory, data_dir: Path, tokenizer_dir: Path) -> StageRun:
    """One uninterrupted pretrain run: checked by the stage test, and the baseline of the resume test."""
    return run_stage(
        tmp_path_factory.mktemp("pretrain"),
        "pretrain",
        PRETRAIN_CONFIG,
        {"data_path": data_dir / "text.jsonl", "data_format": "text", "tokenizer_path": tokenizer_dir},
    )
