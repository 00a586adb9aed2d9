"""Data mixing: a stage's batches draw from each dataset in its weight, and what it reports is what trained.

The weights are sampling proportions (weightsmith.training.mixing): each example the trainer gets
comes from dataset i with probability w_i / sum(w). These tests count, per dataset, the examples
the trainer's collator actually receives over a real run, and check (a) the counts against the
weights within a binomial tolerance, with dataset sizes chosen so that neither "uniform over the
datasets" nor "in proportion to their sizes" would pass, and (b) that the stage's report (its
log and result.json) says exactly those counts.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from training.conftest import WORDS
from training.training_helpers import refusal, run_in_process, stage_context, write_jsonl

FAST = {"logging_steps": 5, "save_steps": 1000, "device": "cpu", "warmup_steps": 0}


def within_binomial(count: int, total: int, p: float, sigmas: float = 4.0) -> bool:
    """|count - total p| within ``sigmas`` binomial standard deviations."""
    return abs(count - total * p) <= sigmas * math.sqrt(total * p * (1 - p))


@pytest.fixture(scope="module")
def mix_data(tmp_path_factory, data_dir: Path) -> dict[str, Path]:
    """A small chat dataset (16 rows), a larger text corpus, a second preference and prompt dataset."""
    base = tmp_path_factory.mktemp("mix")
    rng = random.Random(1)
    corpus = [{"text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 40)))} for _ in range(60)]
    prefs_b = [
        {"prompt": f"Depot of van {n}?", "chosen": f" Van {n} parks north.", "rejected": " Unknown."} for n in range(24)
    ]
    prompts_b = [{"prompt": [{"role": "user", "content": f"Route of van {n}?"}], "answer": "west"} for n in range(12)]
    return {
        "chat": data_dir / "chat.jsonl",
        "text": write_jsonl(base / "corpus.jsonl", corpus),
        "prefs_a": data_dir / "preference.jsonl",
        "prefs_b": write_jsonl(base / "prefs_b.jsonl", prefs_b),
        "prompts_a": data_dir / "prompt.jsonl",
        "prompts_b": write_jsonl(base / "prompts_b.jsonl", prompts_b),
    }


def source(name: str, path: Path, fmt: str, weight: float) -> dict:
    return {"name": name, "ref": f"{name}@v1", "path": str(path), "format": fmt, "weight": weight}


def test_sft_batches_draw_chat_and_replay_in_their_weights(tmp_path, mix_data, tiny_model_dir):
    """16 conversations at weight 1 and a text corpus at weight 3: 25% chat, 75% replay blocks, counted in
    the collator over a real run (uniform would give 50%, in proportion to size about 20% chat)."""
    from weightsmith.training.common import StageInputs, train_with_resume
    from weightsmith.training.sft import Config, build_trainer

    cfg = Config(**FAST, max_steps=30, batch_size=8, max_length=96)
    inputs = StageInputs(
        data_mix=[source("chat", mix_data["chat"], "chat", 1.0), source("corpus", mix_data["text"], "text", 3.0)],
        model_path=tiny_model_dir,
    )
    ctx = stage_context(tmp_path)
    trainer, report = build_trainer(cfg, inputs, ctx)

    fed = {"chat": 0, "corpus": 0}
    collate = trainer.data_collator

    def counting_collator(examples):
        for example in examples:
            # A chat row's labels hide its prompt (-100); a replay block's labels are every token.
            fed["corpus" if example["labels"] == example["input_ids"] else "chat"] += 1
        return collate(examples)

    trainer.data_collator = counting_collator
    result = train_with_resume(trainer, cfg, ctx)

    total = 30 * 8
    assert result["steps"] == 30 and sum(fed.values()) == total
    assert within_binomial(fed["chat"], total, 0.25) and within_binomial(fed["corpus"], total, 0.75), fed
    by_name = {entry["name"]: entry for entry in report["mix"]}
    # What the stage reports is exactly what the trainer was fed.
    assert {name: entry["trained"] for name, entry in by_name.items()} == fed and report["examples"] == total
    assert by_name["chat"]["share"] == 0.25 and by_name["corpus"]["share"] == 0.75
    assert by_name["chat"]["examples"] == 16 and by_name["chat"]["prepared"]["rows_trained"] == 16
    assert by_name["corpus"]["prepared"]["replay"] and by_name["corpus"]["ref"] == "corpus@v1"
    # Within a dataset every example is used once before any is used twice.
    assert by_name["chat"]["passes"] == pytest.approx(fed["chat"] / 16, abs=1e-3)


def test_grpo_prompts_are_drawn_in_their_weights_and_counted_as_generated(tmp_path, capsys, mix_data, tiny_model_dir):
    """GRPO's unit is a prompt (each yields num_generations completions): the prompts generated from, per
    dataset, are the ones the report counts, and follow the weights."""
    from weightsmith.training import grpo
    from weightsmith.training.prepared_trainers import ROW_COLUMN, PreparedGRPOTrainer

    generated: list[str] = []
    original = PreparedGRPOTrainer._generate_and_score_completions

    def counting(self, inputs):
        # The trainer's rows are numbers into the mix's rows: dataset a's 8, then dataset b's 12.
        generated.extend("a" if int(row[ROW_COLUMN]) < 8 else "b" for row in inputs)
        return original(self, inputs)

    cfg = grpo.Config(**FAST, max_steps=6, batch_size=4, num_generations=2, max_completion_length=4)
    inputs = {
        "data_mix": [source("a", mix_data["prompts_a"], "prompt", 1.0),
                     source("b", mix_data["prompts_b"], "prompt", 1.0)],
        "model_path": tiny_model_dir,
    }
    PreparedGRPOTrainer._generate_and_score_completions = counting
    try:
        result, log = run_in_process(tmp_path, capsys, "grpo", cfg.model_dump(), inputs)
    finally:
        PreparedGRPOTrainer._generate_and_score_completions = original
    prompts = 6 * 4 // 2
    # Each prompt is generated from num_generations times, once per group.
    assert len(generated) == prompts * 2
    by_name = {entry["name"]: entry for entry in result["data"]["mix"]}
    assert by_name["a"]["trained"] == generated.count("a") // 2
    assert by_name["b"]["trained"] == generated.count("b") // 2
    assert result["data"]["examples"] == prompts and "grpo data mix: the run trains on 12 prompts" in log


def test_pretrain_mix_reports_blocks_per_dataset(tmp_path, mix_data, tokenizer_dir, capsys):
    cfg = {**FAST, "max_steps": 5, "batch_size": 4, "seq_len": 16, "size": "tiny"}
    inputs = {
        "data_mix": [source("docs", mix_data["text"], "text", 0.8), source("old", mix_data["text"], "text", 0.2)],
        "tokenizer_path": tokenizer_dir,
    }
    result, log = run_in_process(tmp_path, capsys, "pretrain", cfg, inputs)
    mix = {entry["name"]: entry for entry in result["data"]["mix"]}
    assert mix["docs"]["trained"] + mix["old"]["trained"] == 20 == result["data"]["examples"]
    assert mix["docs"]["examples"] == mix["old"]["examples"] == result["train_blocks"] // 2
    assert "pretrain data mix: the run trains on 20 blocks of 16 tokens: docs (text, weight 0.8)" in log
    assert result["train_tokens"] == 20 * 16


def test_a_mix_is_drawn_by_weight_not_by_size_and_each_dataset_is_used_evenly():
    """The sampler itself, at scale: 10 examples at weight 1 against 5,000 at weight 3."""
    from datasets import Dataset

    from weightsmith.training.mixing import Source, mix_datasets

    small = Source("small", None, "chat", 1.0, [], Path("small"))
    large = Source("large", None, "chat", 3.0, [], Path("large"))
    parts = [(small, Dataset.from_dict({"x": list(range(10))})),
             (large, Dataset.from_dict({"x": list(range(10, 5010))}))]
    mixed, counts = mix_datasets(parts, total=4000, seed=0)
    assert len(mixed) == 4000 and sum(counts) == 4000
    assert within_binomial(counts[0], 4000, 0.25)
    values = mixed[:]["x"]
    from_small = [v for v in values if v < 10]
    assert len(from_small) == counts[0]
    # A fresh shuffled pass each time: the 10 small examples are used (almost) equally often.
    uses = [from_small.count(v) for v in range(10)]
    assert max(uses) - min(uses) <= 1
    # The large dataset is sampled, never an example twice before all were used once.
    from_large = [v for v in values if v >= 10]
    assert len(set(from_large)) == len(from_large)
    # Seeded: the same seed draws the same examples, another seed others.
    assert mix_datasets(parts, total=4000, seed=0)[0][:]["x"] == values
    assert mix_datasets(parts, total=4000, seed=1)[0][:]["x"] != values


@pytest.mark.parametrize(
    "kind, mix, expected",
    [
        ("dpo", [("prefs", "prefs_a", "preference"), ("chats", "chat", "chat")],
         "dataset 'chats' of its mix is chat data, and a dpo stage trains on preference data"),
        ("sft", [("corpus", "text", "text")], "holds no chat dataset"),
        ("grpo", [("a", "prompts_a", "prompt"), ("prefs", "prefs_a", "preference")],
         "dataset 'prefs' of its mix is preference data"),
        ("pretrain", [("docs", "text", "text"), ("chats", "chat", "chat")], "a pretrain stage trains on text data"),
    ],
)
def test_a_dataset_the_stage_cannot_train_on_is_refused_before_compute(
    tmp_path, capsys, mix_data, tiny_model_dir, tokenizer_dir, kind, mix, expected
):
    inputs = {
        "data_mix": [source(name, mix_data[key], fmt, 1.0) for name, key, fmt in mix],
        "model_path": tiny_model_dir,
    }
    if kind == "pretrain":
        inputs = {"data_mix": inputs["data_mix"], "tokenizer_path": tokenizer_dir}
    assert expected in refusal(tmp_path, capsys, kind, {"device": "cpu"}, inputs)


def test_a_grpo_mix_of_plain_and_message_prompts_is_refused(tmp_path, capsys, mix_data, tiny_model_dir):
    plain = write_jsonl(tmp_path / "plain.jsonl", [{"prompt": "Depot of truck 1?", "answer": "north"}])
    inputs = {
        "data_mix": [source("chats", mix_data["prompts_a"], "prompt", 1.0), source("plain", plain, "prompt", 1.0)],
        "model_path": tiny_model_dir,
    }
    message = refusal(tmp_path / "run", capsys, "grpo", {"device": "cpu"}, inputs)
    assert "plain-text prompts (plain) and message-list prompts (chats)" in message


def test_a_dpo_mix_of_plain_and_conversational_pairs_trains(tmp_path, capsys, mix_data, tiny_model_dir):
    cfg = {**FAST, "max_steps": 2, "batch_size": 4}
    inputs = {
        "data_mix": [source("conv", mix_data["prefs_a"], "preference", 2.0),
                     source("plain", mix_data["prefs_b"], "preference", 1.0)],
        "model_path": tiny_model_dir,
    }
    result, log = run_in_process(tmp_path, capsys, "dpo", cfg, inputs)
    mix = {entry["name"]: entry for entry in result["data"]["mix"]}
    assert mix["conv"]["trained"] + mix["plain"]["trained"] == 8
    assert mix["conv"]["share"] == pytest.approx(2 / 3, abs=1e-4)
    assert mix["plain"]["prepared"]["rows"] == 24 and "conv: dpo data: 8 of 8 pairs train" in log
    assert json.loads((tmp_path / "result.json").read_text())["data"] == result["data"]


def test_replay_keeps_the_corpus_perplexity_where_plain_sft_loses_it(tmp_path, capsys, data_dir, pretrain_run):
    """The standard remedy for forgetting, measured: the tiny pretrained model (60 steps on the corpus)
    fine-tuned 30 steps on the chats at a high learning rate, with and without replay of the corpus.

    Corpus perplexity relative to the pretrained model's, with the whole procedure (this pretrain and both
    SFTs) run at seeds 0, 1 and 2 before settling these sizes: plain SFT 1.66x, 1.81x, 1.82x; with replay
    {chat: 1, corpus: 1} 0.39x, 0.50x, 0.45x (replay keeps training on the corpus). The chats' perplexity
    fell from ~207 to 44-56 (plain) and 71-76 (replay, which sees half as many chats). This test runs
    seed 0, on the session's pretrain run.
    """
    from transformers import AutoTokenizer

    from weightsmith.evals.generate import perplexity

    pretrained = pretrain_run.output_dir
    corpus = [json.loads(line)["text"] for line in (data_dir / "text.jsonl").read_text().splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(pretrained)
    chats = [tokenizer.apply_chat_template(json.loads(line)["messages"], tokenize=False)
             for line in (data_dir / "chat.jsonl").read_text().splitlines()]
    cfg = {**FAST, "max_steps": 30, "batch_size": 8, "lr": 3e-3, "max_length": 96}
    plain = {"data_path": data_dir / "chat.jsonl", "data_format": "chat", "model_path": pretrained}
    replay = {
        "data_mix": [source("chat", data_dir / "chat.jsonl", "chat", 1.0),
                     source("corpus", data_dir / "text.jsonl", "text", 1.0)],
        "model_path": pretrained,
    }
    run_in_process(tmp_path / "plain", capsys, "sft", cfg, plain)
    run_in_process(tmp_path / "replay", capsys, "sft", cfg, replay)

    def ppl(model_dir, texts):
        return perplexity(model_dir, texts, device="cpu")["value"]

    before = ppl(pretrained, corpus)
    assert ppl(tmp_path / "plain" / "out", corpus) > 1.3 * before  # plain SFT forgets the corpus
    assert ppl(tmp_path / "replay" / "out", corpus) < 1.3 * before  # replay keeps it within the bound
    # ... and still learns the chats: their perplexity falls as it does without replay.
    chats_before = ppl(pretrained, chats)
    assert ppl(tmp_path / "replay" / "out", chats) < 0.5 * chats_before
    assert ppl(tmp_path / "plain" / "out", chats) < 0.5 * chats_before


def test_a_tokenizer_mix_learns_from_documents_drawn_by_weight(tmp_path, capsys, mix_data, data_dir):
    """The tokenizer's unit is a document: as many as the datasets hold together, drawn by weight."""
    inputs = {"data_mix": [source("docs", data_dir / "text.jsonl", "text", 1.0),
                           source("more", mix_data["text"], "text", 3.0)]}
    result, log = run_in_process(tmp_path, capsys, "tokenizer", {"vocab_size": 300, "min_frequency": 1}, inputs)
    mix = {entry["name"]: entry for entry in result["data"]["mix"]}
    assert result["data"]["examples"] == 120 + 60 == mix["docs"]["trained"] + mix["more"]["trained"]
    assert within_binomial(mix["more"]["trained"], 180, 0.75)
    assert "tokenizer data mix: the run trains on 180 documents" in log
