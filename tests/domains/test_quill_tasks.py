"""Task generation, splits, data files and the manual."""

import json
import re

import numpy as np
import pytest

from weightsmith.domains.quill import (
    HELDOUT_PAIRS, OPS, build_datasets, build_manual, chat_rows, eval_rows, make_panel, make_splits, parse,
    program_key, prompt_rows, structural_pairs, structural_split_violations)
from weightsmith.domains.quill.corpus import manual_programs
from weightsmith.domains.quill.generate import literal_variants
from weightsmith.domains.quill.tasks import SYSTEM_PROMPT, Task
from weightsmith.domains.quill.verify import verdict, CORRECT
from weightsmith.errors import UserError


@pytest.fixture(scope="module")
def splits():
    return make_splits(seed=5, n_train=120, n_test=30)


def test_same_seed_same_tasks(splits):
    again = make_splits(seed=5, n_train=120, n_test=30)
    assert again == splits
    other = make_splits(seed=6, n_train=120, n_test=30)
    assert [t.program for t in other["train"]] != [t.program for t in splits["train"]]


def test_split_sizes_and_no_shared_programs(splits):
    assert {k: len(v) for k, v in splits.items()} == {"train": 120, "indist": 30, "heldout": 30, "phrasing": 30}
    keys = {name: {program_key(t.program) for t in tasks} for name, tasks in splits.items()}
    for a, b in [("train", "indist"), ("train", "heldout"), ("train", "phrasing"), ("indist", "heldout"),
                 ("indist", "phrasing"), ("heldout", "phrasing")]:
        assert not keys[a] & keys[b], (a, b)


def test_heldout_split_is_disjoint_by_structure(splits):
    assert structural_split_violations(splits["train"] + splits["indist"], splits["heldout"]) == []
    held = set(HELDOUT_PAIRS)
    assert all(not structural_pairs(parse(t.program)) & held for t in splits["train"])
    assert all(structural_pairs(parse(t.program)) & held for t in splits["heldout"])


def test_violations_are_reported():
    leaky = Task("t-leak", "r", "signal s = rank(ts_corr(close, volume, 10))", "train", 2, 1)
    plain = Task("t-plain", "r", "signal s = rank(close)", "heldout", 1, 1)
    problems = structural_split_violations([leaky], [plain])
    assert len(problems) == 2 and "t-leak" in problems[0] and "t-plain" in problems[1]


def test_structural_pairs_follow_signal_names():
    program = parse("signal c = ts_corr(close, volume, 10)\nsignal s = rank(c)")
    assert ("rank", "ts_corr") in structural_pairs(program)


def test_tasks_are_small_valid_and_mostly_single_statements(splits):
    tasks = splits["train"]
    for task in tasks:
        program = parse(task.program)
        assert task.program == str(program)  # canonical form
        for stmt in program.statements:
            # A lone statement may go unnamed ("xs z of 20d vol"); several must be named, as they refer to each other.
            if hasattr(stmt, "name") and len(program.statements) > 1:
                assert stmt.name in task.request
        assert task.evaluate(task.program) == 1.0
    single = sum(t.n_statements == 1 for t in tasks) / len(tasks)
    assert 0.6 < single < 0.95
    assert {t.depth for t in tasks} >= {1, 2, 3}
    assert max(t.depth for t in tasks) <= 4
    assert len({t.request.split(" ")[0] for t in tasks}) >= 5  # varied phrasings, not one template


def test_literal_near_misses_are_wrong(splits):
    # A task whose answer does not move when a window changes would grade a near miss as correct.
    for task in splits["train"][:40] + splits["heldout"][:10]:
        for variant in literal_variants(parse(task.program)):
            assert verdict(variant, task.program) != CORRECT, (task.program, variant)


def test_row_formats(splits):
    tasks = splits["indist"][:3]
    chat = chat_rows(tasks)
    assert [m["role"] for m in chat[0]["messages"]] == ["system", "user", "assistant"]
    assert chat[0]["messages"][0]["content"] == SYSTEM_PROMPT
    assert chat[0]["messages"][2]["content"] == tasks[0].program
    assert [m["role"] for m in chat_rows(tasks, system=False)[0]["messages"]] == ["user", "assistant"]
    prompts = prompt_rows(tasks)
    assert set(prompts[0]) == {"prompt", "reference", "task_id", "families"}
    assert prompts[0]["families"] == list(tasks[0].families) and tasks[0].families
    assert prompts[0]["prompt"][-1] == {"role": "user", "content": tasks[0].request}
    assert eval_rows(tasks)[0]["split"] == "indist"


def test_impossible_counts_are_a_user_error():
    from weightsmith.domains.quill import GeneratorConfig
    tiny = GeneratorConfig(depth_weights=(1.0,), p_filter=0.0, p_full=0.0, lookback_budget=0)
    with pytest.raises(UserError, match="distinct programs"):
        make_splits(seed=0, n_train=400, n_test=10, config=tiny)


def test_panels_are_seeded():
    a, b, c = make_panel(3), make_panel(3), make_panel(4)
    assert all(np.array_equal(a[f], b[f], equal_nan=True) for f in a.fields)
    assert not np.array_equal(a["close"], c["close"], equal_nan=True)
    assert a.shape == (80, 12) and set(a.sector.tolist()) == {0, 1, 2}
    assert np.isnan(a["returns"][0]).all()
    high, low, close = a["high"], a["low"], a["close"]
    ok = ~np.isnan(close)
    assert (high[ok] >= close[ok]).all() and (low[ok] <= close[ok]).all() and (a["volume"][ok] > 0).all()


# ---- the manual ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manual():
    return build_manual(seed=0)


def test_manual_covers_every_operator(manual):
    slugs = {doc.slug for doc in manual}
    text = "\n".join(doc.text for doc in manual)
    for name, op in OPS.items():
        assert f"reference/{name}" in slugs
        assert op.signature in text
    size_kb = sum(len(doc.text.encode()) for doc in manual) / 1024
    assert size_kb > 200
    assert all(doc.title and doc.text.startswith("# ") for doc in manual)


def test_manual_programs_parse_and_never_show_heldout_pairs(manual):
    blocks = [b for doc in manual for b in re.findall(r"```quill\n(.*?)```", doc.text, re.S)]
    assert len(blocks) > 300
    for block in blocks:
        assert not structural_pairs(parse(block)) & set(HELDOUT_PAIRS), block
    for source in manual_programs(manual):
        assert not structural_pairs(parse(source)) & set(HELDOUT_PAIRS), source


def test_build_datasets_writes_valid_files(tmp_path):
    paths = build_datasets(tmp_path / "out", seed=1, n_train=40, n_test=10, n_manual_examples=10)
    assert set(paths) == {"manual", "tasks_train", "prompts_train", "eval_indist", "eval_heldout", "eval_phrasing",
                          "provenance"}
    rows = {}
    for name in ("tasks_train", "prompts_train", "eval_indist", "eval_heldout", "eval_phrasing"):
        lines = paths[name].read_text(encoding="utf-8").splitlines()
        rows[name] = [json.loads(line) for line in lines]
    assert len(rows["tasks_train"]) == len(rows["prompts_train"]) == 40
    assert len(rows["eval_indist"]) == len(rows["eval_heldout"]) == len(rows["eval_phrasing"]) == 10
    assert all(r["messages"][-1]["role"] == "assistant" for r in rows["tasks_train"])
    assert {r["split"] for r in rows["eval_heldout"]} == {"heldout"}
    assert {r["split"] for r in rows["eval_phrasing"]} == {"phrasing"}
    evals = rows["eval_indist"] + rows["eval_heldout"] + rows["eval_phrasing"]
    for row in evals:
        parse(row["reference"])
        assert row["families"]  # which phrase-book families worded it
    eval_keys = {program_key(r["reference"]) for r in evals}
    train_keys = {program_key(r["reference"]) for r in rows["prompts_train"]}
    assert not eval_keys & train_keys
    manual_files = list(paths["manual"].rglob("*.md"))
    assert len(manual_files) > 50
    manual_keys = {program_key(p) for p in manual_programs(build_manual(seed=1, n_examples=10))}
    assert not eval_keys & manual_keys
    provenance = json.loads(paths["provenance"].read_text())
    assert provenance["seed"] == 1 and provenance["counts"]["train"] == 40
    assert provenance["counts"]["eval_phrasing"] == 10
    assert provenance["generator_version"]
    per_family = provenance["phrasebook"]["requests_per_family"]
    assert sum(per_family["phrasing"][f] for f, spec in provenance["phrasebook"]["families"].items()
               if spec["role"] == "heldout" and f in per_family["phrasing"]) == 10
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".quill-build")]

    again = build_datasets(tmp_path / "again", seed=1, n_train=40, n_test=10, n_manual_examples=10)
    assert json.loads(again["provenance"].read_text())["sha256"] == provenance["sha256"]


def test_positive_child_redraws_when_no_child_fits_the_budget():
    # Regression: series() returns None when no well-typed child fits the lookback budget;
    # log()/sqrt() must draw again rather than evaluate None (it crashed a 6000-task build).
    import random

    from weightsmith.domains.quill.generate import ProgramGenerator
    from weightsmith.domains.quill.nodes import Ref
    from weightsmith.domains.quill.ops import OPS
    from weightsmith.domains.quill.panel import make_panel

    gen = ProgramGenerator(random.Random(0), make_panel(0))
    draws = iter([None, Ref("close")])
    gen.series = lambda *args, **kwargs: next(draws)
    assert gen.positive_child(OPS["log"], 1, budget=10) == Ref("close")
