"""Write everything a Quill training run reads: the manual, the task splits, provenance.

    out_dir/
      manual/               the manual as Markdown (pre-training text)
      tasks_train.jsonl     chat SFT rows            {"messages": [...]}
      prompts_train.jsonl   RL prompt rows           {"prompt": [...], "reference", "task_id"}
      eval_indist.jsonl     in-distribution eval     {"prompt", "reference", "task_id", "split"}
      eval_heldout.jsonl    held-out-by-structure    (same fields)
      eval_phrasing.jsonl   held-out-by-phrasing     (same fields)
      provenance.json       seed, generator version, counts, held-out pairs and phrasing families, file hashes

Prompt and eval rows carry ``families``: the ids of the phrase-book families that worded the request.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

from weightsmith.domains.quill.corpus import build_manual, manual_programs, write_manual
from weightsmith.domains.quill.generate import GeneratorConfig
from weightsmith.domains.quill.phrasebook import PhraseBook, load_phrasebook
from weightsmith.domains.quill.tasks import (
    GENERATOR_VERSION, SYSTEM_PROMPT, chat_rows, eval_rows, make_splits, phrasing_split_violations, program_key,
    prompt_rows, structural_split_violations)
from weightsmith.errors import UserError
from weightsmith.domains.quill.verify import VERIFY_SEEDS


def build_datasets(
    out_dir: str | Path,
    seed: int = 0,
    n_train: int = 2000,
    n_test: int = 200,
    n_heldout: int | None = None,
    n_manual_examples: int = 200,
    system: bool = True,
    config: GeneratorConfig | None = None,
    n_phrasing: int | None = None,
    phrasebook: str | Path | PhraseBook | None = None,
    renderings: int = 1,
) -> dict[str, Path]:
    """Build the Quill datasets into ``out_dir``; returns ``{name: path}``.

    The same arguments always write the same bytes. Eval programs never appear in the train split
    or in the manual, held-out programs use operator pairs that neither of them contains, and
    held-out-phrasing requests use phrase-book families that no training request (nor the
    manual) uses.

    Args:
        n_test: size of the in-distribution eval split.
        n_heldout: size of the held-out eval split (defaults to n_test).
        n_manual_examples: worked examples in the manual's cookbook.
        system: put the Quill system prompt in every conversation.
        n_phrasing: size of the held-out-phrasing eval split (defaults to n_test).
        phrasebook: the phrase book (a YAML file, or one loaded); default: the shipped one.
        renderings: wordings of each train program (``make_splits``): up to ``n_train * renderings``
            train chats, ``n_train`` distinct programs.

    Raises:
        UserError: the phrase book is invalid, or a heldout family's marker shows in training text.
    """
    out = Path(out_dir)
    config = config or GeneratorConfig()
    book = phrasebook if isinstance(phrasebook, PhraseBook) else load_phrasebook(phrasebook)
    manual = build_manual(seed, n_manual_examples)
    in_manual = frozenset(program_key(p) for p in manual_programs(manual))
    splits = make_splits(seed, n_train, n_test, n_heldout, config, exclude_from_eval=in_manual,
                         n_phrasing=n_phrasing, phrasebook=book, renderings=renderings)
    problems = structural_split_violations(splits["train"] + splits["indist"] + splits["phrasing"],
                                           splits["heldout"], sorted(config.exclude_pairs))
    if problems:  # the generator guarantees this; a failure here is a bug, not bad input
        raise AssertionError("held-out split leaks: " + "; ".join(problems[:5]))
    problems = phrasing_split_violations(splits, book, {f"manual page {d.slug}": d.text for d in manual})
    if problems:  # the phrase book's own check catches single phrasings; this, their combinations
        raise UserError(f"{book.source}: the held-out phrasing shows in training text: {problems[0]}"
                        f"{f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''}; make the heldout "
                        "family's markers specific to it, or change the training phrasing that shows them.")

    # Everything is written next to its destination first and moved into place at the end, so a
    # failure leaves the previous build (or nothing), never half a build.
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".quill-build-", dir=out))
    try:
        write_manual(manual, staging / "manual")
        files = {
            "tasks_train": ("tasks_train.jsonl", chat_rows(splits["train"], system)),
            "prompts_train": ("prompts_train.jsonl", prompt_rows(splits["train"], system)),
            "eval_indist": ("eval_indist.jsonl", eval_rows(splits["indist"], system)),
            "eval_heldout": ("eval_heldout.jsonl", eval_rows(splits["heldout"], system)),
            "eval_phrasing": ("eval_phrasing.jsonl", eval_rows(splits["phrasing"], system)),
        }
        for filename, rows in files.values():
            with open(staging / filename, "w", encoding="utf-8") as fh:
                for row in rows:
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        manual_bytes = sum(len(d.text.encode()) for d in manual)
        provenance = {
            "domain": "quill",
            "generator_version": GENERATOR_VERSION,
            "seed": seed,
            "counts": {"train": len(splits["train"]), "train_programs": len({t.program for t in splits["train"]}),
                       "renderings": renderings, "eval_indist": len(splits["indist"]),
                       "eval_heldout": len(splits["heldout"]), "eval_phrasing": len(splits["phrasing"]),
                       "manual_documents": len(manual),
                       "manual_bytes": manual_bytes, "manual_programs_excluded_from_eval": len(in_manual)},
            "heldout_pairs": [list(p) for p in sorted(config.exclude_pairs)],
            "phrasebook": {
                "source": book.source if phrasebook is not None else "shipped",
                "sha256": book.sha256,
                "families": {f.id: {"kind": f.kind, "role": f.role} for f in book.families.values()},
                "requests_per_family": _family_counts(splits),
            },
            "generator_config": {k: (sorted(map(list, v)) if k == "exclude_pairs" else v)
                                 for k, v in asdict(config).items()},
            "system_prompt": SYSTEM_PROMPT if system else None,
            "verify_seeds": list(VERIFY_SEEDS),
            "sha256": {filename: _sha256(staging / filename) for filename, _ in files.values()},
        }
        (staging / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")

        paths = {"manual": out / "manual", "provenance": out / "provenance.json"}
        if paths["manual"].exists():
            shutil.rmtree(paths["manual"])
        os.replace(staging / "manual", paths["manual"])
        for name, (filename, _) in files.items():
            os.replace(staging / filename, out / filename)
            paths[name] = out / filename
        os.replace(staging / "provenance.json", paths["provenance"])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return paths


def _family_counts(splits: dict) -> dict[str, dict[str, int]]:
    """{split: {family id: requests it worded}}, families sorted."""
    counts: dict[str, dict[str, int]] = {}
    for split, tasks in splits.items():
        tally: dict[str, int] = defaultdict(int)
        for task in tasks:
            for family in task.families:
                tally[family] += 1
        counts[split] = dict(sorted(tally.items()))
    return counts


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
