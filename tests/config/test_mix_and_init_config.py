"""Pipeline keys for data mixing (data: {name: weight}) and random initialization (model: {init: random}).

Every mistake is one sentence naming the key, before anything is written; a plain ``data: name``
parses exactly as before.
"""

from __future__ import annotations

import math

import pytest
import yaml

from helpers import EXAMPLES
from weightsmith.config import load_pipeline
from weightsmith.errors import UserError

DATA = EXAMPLES / "tiny" / "data"


def pipeline(tmp_path, **stages) -> dict:
    return {
        "name": "mixes",
        "datasets": {
            "docs": {"path": str(DATA / "docs"), "format": "text"},
            "tasks": {"path": str(DATA / "tasks.jsonl"), "format": "chat"},
            "prefs": {"path": str(DATA / "prefs.jsonl"), "format": "preference"},
            "prompts": {"path": str(DATA / "prompts.jsonl"), "format": "prompt"},
        },
        "defaults": {"device": "cpu"},
        "stages": {
            "tokenizer": {"data": "docs", "vocab_size": 320, "min_frequency": 1},
            "pretrain": {"data": "docs", "tokenizer": "tokenizer", "size": "tiny"},
            "sft": {"model": "pretrain", "data": {"tasks": 1.0, "docs": 0.3}},
            **stages,
        },
    }


def load(tmp_path, raw: dict, overrides=()):
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_pipeline(path, list(overrides))


def test_a_mix_parses_with_its_weights_and_waits_for_the_stages_it_names(tmp_path):
    raw = pipeline(tmp_path)
    raw["stages"]["pairs"] = {"model": "pretrain", "data": "prompts", "reward": "chrf"}
    raw["stages"]["dpo"] = {"model": "sft", "data": {"prefs": 2, "pairs": 1}}
    spec = load(tmp_path, raw)
    by = {s.name: s for s in spec.stages}
    assert by["sft"].data == {"tasks": 1.0, "docs": 0.3} and by["sft"].data_names == ["tasks", "docs"]
    assert by["dpo"].upstream({s.name for s in spec.stages}) == ["sft", "pairs"]
    # A plain name stays a plain name: the same spec as before mixing existed.
    assert by["pretrain"].data == "docs" and by["pretrain"].data_names == ["docs"]
    # A weight can be overridden on the command line like any key.
    assert {s.name: s for s in load(tmp_path, raw, ["sft.data.docs=0.5"]).stages}["sft"].data["docs"] == 0.5


def test_a_random_init_parses_into_its_size_and_tokenizer(tmp_path):
    raw = pipeline(tmp_path)
    raw["stages"]["sft"]["model"] = {"init": "random", "size": "small", "tokenizer": "tokenizer"}
    spec = load(tmp_path, raw)
    sft = {s.name: s for s in spec.stages}["sft"]
    assert sft.model is None and sft.model_init == {"init": "random", "size": "small"}
    assert sft.tokenizer == "tokenizer" and sft.upstream({s.name for s in spec.stages}) == ["tokenizer"]


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda s: s["sft"].update(data={"tasks": 1.0, "docs": 0}),
         r"stages\.sft\.data\.docs: the weight must be a number > 0 .*got 0"),
        (lambda s: s["sft"].update(data={"tasks": -1}), r"stages\.sft\.data\.tasks: the weight must be a number > 0"),
        (lambda s: s["sft"].update(data={"tasks": "lots"}), r"stages\.sft\.data\.tasks: .*got 'lots'"),
        (lambda s: s["sft"].update(data={"tasks": True}), r"stages\.sft\.data\.tasks: .*got True"),
        (lambda s: s["sft"].update(data={"tasks": math.nan}), r"stages\.sft\.data\.tasks: .*got nan"),
        (lambda s: s["sft"].update(data={}), r"stages\.sft\.data: a mix needs at least one dataset"),
        (lambda s: s["sft"].update(data={"sft": 1.0, "tasks": 1.0}),
         r"stages\.sft\.data: 'sft' is also this stage's own name"),
        (lambda s: s.update(pairs={"model": "pretrain", "data": {"prompts": 1.0}, "reward": "chrf"}),
         r"stages\.pairs\.data: a pairs stage reads one dataset; a mix \(name: weight\) is for the training stages"),
        (lambda s: s["sft"].update(model={"init": "random", "size": "huge", "tokenizer": "tokenizer"}),
         r"stages\.sft\.model\.size: Input should be 'tiny', 'small'"),
        (lambda s: s["sft"].update(model={"init": "pretrained", "size": "tiny", "tokenizer": "tokenizer"}),
         r"stages\.sft\.model\.init: Input should be 'random'"),
        (lambda s: s["sft"].update(model={"init": "random", "size": "tiny"}),
         r"stages\.sft\.model\.tokenizer: required key is missing"),
        (lambda s: s["sft"].update(model={"init": "random", "size": "tiny", "tokenizer": "tokenizer", "layers": 3}),
         r"stages\.sft\.model\.layers: unknown key"),
        (lambda s: s["sft"].update(model={"init": "random", "size": "tiny", "tokenizer": "tokenizer"},
                                   tokenizer="other"),
         r"stages\.sft\.tokenizer: a random initialization takes its tokenizer from model\.tokenizer"),
        (lambda s: s["pretrain"].update(model={"init": "random", "size": "tiny", "tokenizer": "tokenizer"}),
         r"stages\.pretrain\.model: a pretrain stage starts from a random initialization already"),
        (lambda s: s.update(gate={"kind": "gate", "suite": "s.yaml",
                                  "model": {"init": "random", "size": "tiny", "tokenizer": "tokenizer"}}),
         r"stages\.gate\.model: a gate stage needs a trained model"),
    ],
)
def test_mix_and_init_mistakes_name_the_key(tmp_path, mutate, expected):
    raw = pipeline(tmp_path)
    mutate(raw["stages"])
    with pytest.raises(UserError, match=expected):
        load(tmp_path, raw)


def _submit(ws, tmp_path, raw):
    from weightsmith.jobs.pipeline import submit_pipeline

    return submit_pipeline(ws, load(tmp_path, raw))


@pytest.mark.parametrize(
    "stages, expected",
    [
        ({"sft": {"model": "pretrain", "data": {"tasks": 1.0, "nope": 0.5}}},
         r"^stages\.sft\.data\.nope: no dataset named 'nope'"),
        ({"dpo": {"model": "sft", "data": {"prefs": 1.0, "tasks": 0.5}}},
         r"^stages\.dpo\.data\.tasks: dataset 'tasks' is chat data, but a dpo stage trains on \(and mixes\) preference "
         r"data; take it out of the mix\.$"),
        ({"sft": {"model": "pretrain", "data": {"docs": 1.0}}},
         r"^stages\.sft\.data: the mix holds no chat dataset"),
        ({"cpt": {"model": "pretrain", "data": {"docs": 1.0, "pairs": 0.2}},
          "pairs": {"model": "pretrain", "data": "prompts", "reward": "chrf"}},
         r"^stages\.cpt\.data\.pairs: dataset 'pairs' is preference data, but a cpt stage trains on "
         r"\(and mixes\) text"),
        ({"grpo": {"model": "sft", "data": {"prompts": 1.0}, "reward": "exact_match_of_nothing"}},
         r"^stages\.grpo\.reward \(dataset 'prompts' of the mix\): .*exact_match_of_nothing"),
    ],
)
def test_a_mix_is_checked_against_the_workspace_and_formats_before_anything_is_queued(ws, tmp_path, stages, expected):
    from weightsmith.jobs.queue import list_jobs

    raw = pipeline(tmp_path)
    raw["stages"].update(stages)
    with pytest.raises(UserError, match=expected):
        _submit(ws, tmp_path, raw)
    assert list_jobs(ws) == []


def test_a_plain_data_name_is_refused_in_the_same_words_as_before(ws, tmp_path):
    raw = pipeline(tmp_path)
    raw["stages"]["sft"]["data"] = "docs"
    with pytest.raises(UserError, match=r"^stages\.sft\.data: dataset 'docs' is text data, but a sft stage trains on "
                                        r"chat data\.$"):
        _submit(ws, tmp_path, raw)


def test_a_queued_mix_pins_each_dataset_version_with_its_weight(ws, tmp_path):
    raw = pipeline(tmp_path)
    raw["stages"]["sft"]["model"] = {"init": "random", "size": "tiny", "tokenizer": "tokenizer"}
    submitted = _submit(ws, tmp_path, raw)
    sft = next(job for job in submitted["jobs"] if job["stage"] == "sft")
    from weightsmith.workspace.models import Job

    with ws.session() as s:
        payload = s.get(Job, sft["id"]).payload
    assert [(e["name"], e["weight"], e["ref"], e["format"]) for e in payload["data"]["mix"]] == [
        ("tasks", 1.0, "tasks@v1", "chat"), ("docs", 0.3, "docs@v1", "text")]
    assert payload["model"] is None and payload["model_init"] == {"init": "random", "size": "tiny"}
    assert payload["tokenizer"] == {"stage": "tokenizer"}
