"""The catalog example (examples/catalog/): its generator and its pipelines.

No training here: the measured runs are in docs/catalog-experiments.md. These tests hold the
properties the measurements rely on — the same seed writes the same bytes, no held-out part
leaks into the training questions, every answer is stated in the documents, the shipped files
are what the generator writes, and the pipelines and suite validate.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import EXAMPLES

from weightsmith.config import load_pipeline
from weightsmith.domains.catalog import build_catalog
from weightsmith.domains.catalog.company import APPROVERS, MATERIALS, PRESSURE_RATINGS, SUPPLIERS
from weightsmith.errors import UserError
from weightsmith.evals.suite import load_suite

CATALOG = EXAMPLES / "catalog"
SMALL = {"n_parts": 24, "n_heldout": 6, "questions_per_fact": 2}


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _entries(catalog_md: str) -> dict[str, str]:
    """The catalog's entries by part code: ``## CODE NAME`` and the prose under it."""
    blocks = re.split(r"^## ", catalog_md, flags=re.M)[1:]
    return {block.split()[0]: block for block in blocks}


@pytest.fixture(scope="module", params=["sentence", "short"])
def built(request, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp(f"catalog-{request.param}")
    build_catalog(out, seed=5, restatements_per_part=3, answers=request.param, **SMALL)
    return out


def test_the_same_seed_writes_the_same_bytes_and_another_seed_another_company(built, tmp_path):
    answers = json.loads((built / "provenance.json").read_text())["options"]["answers"]
    build_catalog(tmp_path / "again", seed=5, restatements_per_part=3, answers=answers, **SMALL)
    assert _files(tmp_path / "again") == _files(built)
    build_catalog(tmp_path / "other", seed=6, restatements_per_part=3, answers=answers, **SMALL)
    facts = [(row["code"], row["material"]) for row in _read_jsonl(built / "facts.jsonl")]
    assert facts != [(row["code"], row["material"]) for row in _read_jsonl(tmp_path / "other" / "facts.jsonl")]


def test_no_heldout_part_is_named_in_any_training_question(built):
    facts = _read_jsonl(built / "facts.jsonl")
    heldout = [row for row in facts if row["split"] == "heldout"]
    assert len(heldout) == SMALL["n_heldout"]
    training_text = (built / "qa_train.jsonl").read_text(encoding="utf-8")
    for row in heldout:
        line = row["name"].split()[0]  # the invented model-line word, e.g. "Dravik"
        assert row["code"] not in training_text and line not in training_text, row
    # ... and every held-out part is in the documents, which is all the model may learn it from.
    entries = _entries((built / "corpus" / "catalog.md").read_text(encoding="utf-8"))
    assert {row["code"] for row in heldout} <= set(entries)
    # The held-out eval asks about held-out parts only, the training eval about training parts only.
    assert {r["part"] for r in _read_jsonl(built / "eval_heldout.jsonl")} == {row["code"] for row in heldout}
    assert not {r["part"] for r in _read_jsonl(built / "eval_train.jsonl")} & {row["code"] for row in heldout}


def _values(answer: str) -> list[tuple[str, str]]:
    """Every fact value an answer mentions: ``[(kind, value)]`` (a tier as its letter)."""
    found = [(kind, value) for kind, values in (("pressure", PRESSURE_RATINGS), ("material", MATERIALS),
                                                ("supplier", SUPPLIERS))
             for value in values if re.search(rf"(?<![\w-]){re.escape(value)}(?![\w-])", answer)]
    found += [("tier", tier) for tier in re.findall(r"\b[Tt]ier ([A-D])\b", answer)]
    found += [("approver", who) for who, _ in APPROVERS.values() if who in answer]
    return found


def _stated(entry: str, policy: str, answer: str) -> bool:
    """Whether every fact ``answer`` gives (at least one) is stated in the documents for the part whose
    catalog entry is ``entry``: its value in the entry; an approver in the policy, for the part's tier."""
    values = _values(answer)
    tier = re.search(r"\b[Tt]ier ([A-D])\b", entry).group(1)
    for kind, value in values:
        if kind == "tier" and value != tier:
            return False
        if kind == "approver" and re.search(rf"\*\*Tier {tier}\*\*[^\n]*approved by {re.escape(value)}\.", policy) is None:
            return False
        if kind in ("pressure", "material", "supplier") and not re.search(rf"(?<![\w-]){re.escape(value)}(?![\w-])", entry):
            return False
    return bool(values)


def test_every_answer_is_stated_in_the_documents_as_written(built):
    corpus = built / "corpus"
    entries = _entries((corpus / "catalog.md").read_text(encoding="utf-8"))
    policy = (corpus / "purchasing-policy.md").read_text(encoding="utf-8")
    facts = {row["code"]: row for row in _read_jsonl(built / "facts.jsonl")}
    checked = 0
    for row in _read_jsonl(built / "eval_probe.jsonl"):  # the entry, cut before a fact: completed, it is the entry
        assert ("## " + entries[row["part"]]).startswith(f"{row['prompt']} {row['answer']}"), row
    for name in ("eval_heldout", "eval_train"):
        for row in _read_jsonl(built / f"{name}.jsonl"):
            assert _stated(entries[row["part"]], policy, row["answer"]), (name, row)
            assert row["part"] in row["prompt"] or facts[row["part"]]["name"] in row["prompt"], row
            checked += 1
    # A training question names its part by code or by name; its answer is stated in that part's entry.
    by_name = {row["name"]: code for code, row in facts.items()}
    for row in _read_jsonl(built / "qa_train.jsonl"):
        question, answer = (m["content"] for m in row["messages"])
        codes = [code for code in facts if re.search(rf"\b{code}\b", question)]
        codes += [code for name, code in by_name.items() if name in question]
        assert len(codes) == 1, question
        assert _stated(entries[codes[0]], policy, answer), (question, answer)
        checked += 1
    assert checked > 200
    # The check can fail: another part's fact is not stated in this part's entry.
    first = next(iter(facts.values()))
    other = next(v for v in MATERIALS if v != first["material"] and v not in entries[first["code"]])
    assert not _stated(entries[first["code"]], policy, f"{first['code']} is made of {other}.")


def test_restatements_state_each_part_that_many_times(built, tmp_path):
    facts = _read_jsonl(built / "facts.jsonl")
    restated = (built / "corpus" / "catalog-restated.md").read_text(encoding="utf-8")
    for row in facts:
        passages = [p for p in restated.split("\n\n") if row["code"] in p]
        assert len(passages) == 2, row["code"]  # 3 statements: the catalog entry and 2 restatements
        for passage in passages:  # every fact, in full, every sentence naming the part by code and name
            sentences = passage.split(". ")
            assert all(row["code"] in s and row["name"] in s for s in sentences), passage
            for fact in ("pressure", "material", "supplier"):
                assert row[fact] in passage
            assert re.search(rf"\b{row['tier']}\b", passage)
    build_catalog(tmp_path / "as-written", seed=5, restatements_per_part=1, **SMALL)
    assert sorted(p.name for p in (tmp_path / "as-written" / "corpus").iterdir()) == ["catalog.md", "purchasing-policy.md"]
    with pytest.raises(UserError, match="restatements_per_part"):
        build_catalog(tmp_path / "bad", restatements_per_part=0, **SMALL)


def test_the_shipped_data_is_what_the_generator_writes(tmp_path):
    provenance = json.loads((CATALOG / "data" / "provenance.json").read_text(encoding="utf-8"))
    options = provenance["options"]
    build_catalog(tmp_path, seed=provenance["seed"], restatements_per_part=options["restatements_per_part"],
                  n_parts=options["n_parts"], n_heldout=options["n_heldout"],
                  questions_per_fact=options["questions_per_fact"], answers=options["answers"])
    assert _files(tmp_path) == _files(CATALOG / "data"), "run: python examples/catalog/generate.py"


@pytest.mark.parametrize("name", ["pipeline.yaml", "pipeline_random_init.yaml"])
def test_the_example_pipelines_and_suite_validate(name):
    spec = load_pipeline(CATALOG / name)
    stages = {stage.name: stage for stage in spec.stages}
    assert stages["sft"].kind == "sft"
    suite = load_suite(CATALOG / "suite.yaml")
    assert suite.kpis["heldout_qa"].target == 0.6
    assert suite.kpis["documents_perplexity"].retention
    for path in {kpi.path for kpi in suite.kpis.values()}:
        assert Path(path).exists()
