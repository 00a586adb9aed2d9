"""Write the catalog example's data: documents (with restatements), QA chats, eval sets, provenance.

    out_dir/
      corpus/catalog.md             the catalog as written: every part once (pre-training text)
      corpus/purchasing-policy.md   who approves each purchase tier
      corpus/catalog-restated.md    each part's facts restated ``restatements - 1`` more times
                                    (absent when restatements is 1: the documents as the company wrote them)
      qa_train.jsonl                chat: questions about the training parts, with their answers
      eval_heldout.jsonl            prompt: one question per fact of each held-out part (parts that
                                    appear only in the documents)
      eval_train.jsonl              prompt: one question per fact of as many training parts as are held out
      eval_probe.jsonl              prompt (plain text): the catalog's own entries for held-out parts,
                                    cut just before a fact, to complete
      documents.jsonl               text: the documents as written, one row per catalog entry (and one
                                    for the policy): the retention KPI's perplexity, scored per entry
      facts.jsonl                   every part's facts and split: the answer key
      provenance.json               seed, options, counts, held-out codes, file hashes

Eval rows carry ``answer`` (the reference, in the training answers' style), ``fact`` (the fact
alone), ``pattern`` (a regular expression that finds the fact in an answer of either style, for
``regex_match``), ``type`` (the question type) and ``part`` (the part's code).
The same arguments always write the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from pathlib import Path

from weightsmith.domains.catalog.company import COMPANY, FACT_OPTIONS, make_parts, split_parts
from weightsmith.domains.catalog.render import (
    ANSWER_STYLES,
    QUESTION_TYPES,
    answer,
    catalog_document,
    catalog_entries,
    fact_pattern,
    policy_document,
    questions,
    restatements,
)
from weightsmith.errors import UserError

GENERATOR_VERSION = 1


def build_catalog(
    out_dir: str | Path,
    *,
    seed: int = 0,
    restatements_per_part: int = 8,
    n_parts: int = 120,
    n_heldout: int = 30,
    questions_per_fact: int = 3,
    answers: str = "sentence",
) -> dict[str, Path]:
    """Generate Halvard's documents and QA into ``out_dir``; returns ``{name: path}``.

    Args:
        seed: the company (parts and facts), the split, the wording: same seed, same bytes.
        restatements_per_part: how many times the pre-training text states each part's facts —
            1 is the catalog as written (the situation where QA fine-tuning does not reach parts
            it never saw asked about); each one more adds a restatement (Allen-Zhu & Li 2023).
        n_parts: parts in the catalog.
        n_heldout: of those, parts no training question asks about (they are the headline eval).
        questions_per_fact: differently worded training questions per (part, fact).
        answers: ``"sentence"`` (the part as asked, then the fact in the documents' words: "BV-4417
            is made of bronze.") or ``"short"`` (the fact alone: "bronze"); see :func:`render.answer`.

    Raises:
        UserError: for counts that leave no training or held-out parts.
    """
    if restatements_per_part < 1:
        raise UserError(f"restatements_per_part is {restatements_per_part}; 1 means the documents as written, more adds restatements.")
    if not 0 < n_heldout < n_parts:
        raise UserError(f"n_heldout is {n_heldout} of {n_parts} parts; hold out at least one part and keep at least one for training.")
    if answers not in ANSWER_STYLES:
        raise UserError(f"answers is {answers!r}; use one of {', '.join(ANSWER_STYLES)}.")
    if questions_per_fact < 1:
        raise UserError(f"questions_per_fact is {questions_per_fact}; ask at least one question per fact.")
    parts = make_parts(n_parts, seed)
    train, heldout = split_parts(parts, n_heldout, seed)
    rng = random.Random(f"halvard-questions-{seed}")

    qa_train = []
    for part in train:
        for qtype in QUESTION_TYPES:
            for question, ref in questions(part, qtype, questions_per_fact, rng):
                qa_train.append({"messages": [{"role": "user", "content": question},
                                              {"role": "assistant", "content": answer(part, qtype, answers, ref)}]})
    rng.shuffle(qa_train)

    def eval_rows(chosen):
        rows = []
        for part in chosen:
            for qtype in QUESTION_TYPES:
                question, ref = questions(part, qtype, 1, rng)[0]
                rows.append({"prompt": question, "answer": answer(part, qtype, answers, ref),
                             "fact": answer(part, qtype, "short"), "pattern": fact_pattern(part, qtype),
                             "type": qtype, "part": part.code})
        return rows

    # As many training parts as held-out ones: the two QA KPIs then weigh alike.
    eval_heldout, eval_train = eval_rows(heldout), eval_rows(train[:n_heldout])
    held_codes = {p.code for p in heldout}
    probes = [{"prompt": prefix, "answer": fact, "type": _probe_type(part, fact), "part": part.code}
              for part, _, part_probes in catalog_entries(parts, seed) if part.code in held_codes
              for prefix, fact in part_probes]
    documents = [{"text": text} for _, text, _ in catalog_entries(parts, seed)] + [{"text": policy_document()}]
    facts = [{"code": p.code, "name": p.name, "kind": p.kind, "pressure": p.pressure, "material": p.material,
              "supplier": p.supplier, "tier": p.tier, "approver": p.approver,
              "split": "heldout" if p.code in held_codes else "train"} for p in parts]

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Written beside the destination and moved into place at the end: a failure never leaves half a build.
    staging = Path(tempfile.mkdtemp(prefix=".catalog-build-", dir=out))
    try:
        corpus = staging / "corpus"
        corpus.mkdir()
        (corpus / "catalog.md").write_text(catalog_document(parts, seed), encoding="utf-8")
        (corpus / "purchasing-policy.md").write_text(policy_document(), encoding="utf-8")
        restated = restatements(parts, restatements_per_part - 1, seed)
        if restated:
            (corpus / "catalog-restated.md").write_text(restated, encoding="utf-8")
        files = {"qa_train": qa_train, "eval_heldout": eval_heldout, "eval_train": eval_train,
                 "eval_probe": probes, "documents": documents,
                 "facts": facts}
        for name, rows in files.items():
            with open(staging / f"{name}.jsonl", "w", encoding="utf-8") as fh:
                fh.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        written = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
        provenance = {
            "domain": "catalog",
            "company": COMPANY,
            "generator_version": GENERATOR_VERSION,
            "seed": seed,
            "options": {"restatements_per_part": restatements_per_part, "n_parts": n_parts,
                        "n_heldout": n_heldout, "questions_per_fact": questions_per_fact,
                        "answers": answers},
            "counts": {name: len(rows) for name, rows in files.items()},
            "chance": _chance(eval_heldout),
            "heldout_parts": sorted(held_codes),
            "sha256": {name: hashlib.sha256((staging / name).read_bytes()).hexdigest() for name in written},
        }
        (staging / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")

        paths = {}
        if (out / "corpus").exists():
            shutil.rmtree(out / "corpus")
        os.replace(corpus, out / "corpus")
        paths["corpus"] = out / "corpus"
        for name in [*files, "provenance"]:
            filename = f"{name}.json" if name == "provenance" else f"{name}.jsonl"
            os.replace(staging / filename, out / filename)
            paths[name] = out / filename
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return paths


def _probe_type(part, fact: str) -> str:
    return next(t for t in ("pressure", "material", "supplier", "tier") if getattr(part, t) == fact)


def _chance(rows: list[dict]) -> float:
    """Exact match expected from guessing uniformly among each question type's possible answers."""
    return round(sum(1 / FACT_OPTIONS[row["type"]] for row in rows) / len(rows), 4)
