"""Quill tasks: a request in English and the program that answers it, split four ways.

Splits:
  train     programs drawn with the held-out operator pairs excluded, worded by the phrase
            book's train families
  indist    a random share of the same draw (never a program that is also in train), worded alike
  heldout   programs that each contain one of HELDOUT_PAIRS, which train never contains
  phrasing  programs like indist's, each worded with one of the phrase book's heldout families
            (and train families for the rest): wordings no training request uses

Programs are de-duplicated by structure (names replaced by placeholders), so ``signal mom =
rank(close)`` in train keeps ``signal alpha = rank(close)`` out of the test sets. Every task
records the ids of the phrase-book families that worded it.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from dataclasses import dataclass

from weightsmith.domains.quill.describe import render_request
from weightsmith.domains.quill.generate import HELDOUT_PAIRS, GeneratorConfig, ProgramGenerator, structural_pairs
from weightsmith.domains.quill.nodes import (
    Call, Expr, Portfolio, Program, Ref, Signal, depth, format_program, statement_exprs)
from weightsmith.domains.quill.parser import parse
from weightsmith.domains.quill.phrasebook import PhraseBook, load_phrasebook
from weightsmith.domains.quill.verify import score, verification_panels
from weightsmith.errors import UserError

GENERATOR_VERSION = "quill-tasks-3"  # 2: requests worded from the phrase book; the phrasing split; 3: slips, renderings, hash-seed-free draws
MAX_MISSES = 300
SYSTEM_PROMPT = ("You write programs in Quill, a language for signals on daily market data. "
                 "Reply with the Quill program only.")


@dataclass(frozen=True)
class Task:
    """One request/program pair. The same object is training data, an RL prompt and an eval item."""

    task_id: str
    request: str
    program: str  # canonical source of the reference program
    split: str
    depth: int
    n_statements: int
    families: tuple[str, ...] = ()  # ids of the phrase-book families that worded the request

    def messages(self, system: bool = True, with_answer: bool = False) -> list[dict]:
        out = [{"role": "system", "content": SYSTEM_PROMPT}] if system else []
        out.append({"role": "user", "content": self.request})
        if with_answer:
            out.append({"role": "assistant", "content": self.program})
        return out

    def evaluate(self, completion: object) -> float:
        """The ``quill_exec`` score of one completion (1.0, 0.1 or 0.0)."""
        return score(completion, self.program)


def program_key(program: Program | str) -> str:
    """Canonical source with signal and filter names replaced by placeholders (s0, f0, ...)."""
    if isinstance(program, str):
        program = parse(program)
    renames: dict[str, str] = {}
    statements = []
    for stmt in program.statements:
        if isinstance(stmt, Portfolio):
            statements.append(Portfolio(stmt.kind, _rename(stmt.signal, renames),
                                        _rename(stmt.where, renames) if stmt.where is not None else None,
                                        stmt.top))
            continue
        renames[stmt.name] = f"{'s' if isinstance(stmt, Signal) else 'f'}{len(renames)}"
        statements.append(type(stmt)(renames[stmt.name], _rename(stmt.expr, renames)))
    return format_program(Program(tuple(statements)))


def _rename(expr: Expr, renames: dict[str, str]) -> Expr:
    if isinstance(expr, Ref):
        return Ref(renames.get(expr.name, expr.name))
    if isinstance(expr, Call):
        return Call(expr.op, tuple(_rename(a, renames) for a in expr.args))
    return expr


def make_task(program: Program, split: str, rng: random.Random, book: PhraseBook | None = None,
              force: str | None = None) -> Task:
    """The task for ``program``: its request worded by ``book``'s train families (and ``force``'s
    family, when given: see ``describe.render_request``)."""
    source = format_program(program)
    rendering = render_request(program, rng, book, force)
    digest = hashlib.sha1(f"{split}\n{rendering.text}\n{source}".encode()).hexdigest()[:12]
    return Task(
        task_id=f"quill-{split}-{digest}",
        request=rendering.text,
        program=source,
        split=split,
        depth=max(depth(e) for s in program.statements for e in statement_exprs(s)),
        n_statements=len(program.statements),
        families=rendering.families,
    )


def heldout_phrasing_task(program: Program, rng: random.Random, book: PhraseBook, uses: Counter) -> Task:
    """A phrasing-split task: ``program`` worded with one heldout family, the least used so far
    among those that can word it (a join family needs several statements, a bucket family a
    portfolio), so each held-out family gets its share of the split. ``uses`` is updated."""
    # The ids in a fixed order before the draws: a frozenset's own order changes with PYTHONHASHSEED,
    # which made the same seed word a different split in another process.
    order = sorted(sorted(book.heldout_ids), key=lambda fid: (uses[fid], rng.random()))
    for fid in order:
        task = make_task(program, "phrasing", rng, book, force=fid)
        if fid in task.families:
            uses[fid] += 1
            return task
    raise UserError(f"{book.source}: no heldout family can word '{format_program(program)}'; "
                    "give one heldout family signal and filter frames (like 'walrus').")


def make_splits(
    seed: int = 0,
    n_train: int = 2000,
    n_test: int = 200,
    n_heldout: int | None = None,
    config: GeneratorConfig | None = None,
    exclude_from_eval: frozenset[str] = frozenset(),
    n_phrasing: int | None = None,
    phrasebook: PhraseBook | None = None,
    renderings: int = 1,
) -> dict[str, list[Task]]:
    """Draw the train, indist, heldout and phrasing task lists; the same seed gives the same lists.

    Args:
        n_test: size of the in-distribution test split.
        n_heldout: size of the held-out-by-structure split (defaults to n_test).
        exclude_from_eval: program keys (see ``program_key``) that must not be evaluated on,
            e.g. the programs printed in the manual the model pre-trains on.
        n_phrasing: size of the held-out-phrasing split (defaults to n_test).
        phrasebook: how requests are worded (default: the shipped phrase book).
        renderings: how many times each train program is worded (independent draws of the phrase
            book's train families; a wording drawn twice is kept once): ``n_train`` programs give up
            to ``n_train * renderings`` train tasks, each program's wordings side by side. Rendering
            costs a fraction of drawing a program, so this is the cheap way to more ways of saying
            things. The extra wordings draw from their own random stream: the eval splits and each
            program's first wording are the same whatever ``renderings`` is.
    """
    if renderings < 1:
        raise ValueError(f"renderings must be at least 1, got {renderings}")
    n_heldout = n_test if n_heldout is None else n_heldout
    n_phrasing = n_test if n_phrasing is None else n_phrasing
    n_eval = n_test + n_phrasing  # indist and phrasing programs come from the same draw
    book = phrasebook or load_phrasebook()
    config = config or GeneratorConfig()
    rng = random.Random(seed)
    generator = ProgramGenerator(rng, verification_panels()[0], config)
    seen: set[str] = set()

    pool: list[tuple[Program, str]] = []
    eligible = 0
    misses = 0  # draws in a row that gave nothing new: the program space is used up
    while len(pool) < n_train + n_eval or eligible < n_eval:
        program = generator.program()
        key = program_key(program)
        if key in seen:
            misses += 1
            if misses > MAX_MISSES:
                raise UserError(f"could draw only {len(pool)} distinct programs for {n_train} train + {n_test} "
                                "test tasks; lower the counts or allow deeper programs in the generator config.")
            continue
        misses = 0
        seen.add(key)
        pool.append((program, key))
        eligible += key not in exclude_from_eval
    rng.shuffle(pool)
    train, indist, phrasing = [], [], []
    n_programs = 0
    extra_rng = random.Random(f"{seed}/renderings")
    uses: Counter = Counter()
    for program, key in pool:
        if len(indist) < n_test and key not in exclude_from_eval:
            indist.append(make_task(program, "indist", rng, book))
        elif len(phrasing) < n_phrasing and key not in exclude_from_eval:
            phrasing.append(heldout_phrasing_task(program, rng, book, uses))
        elif n_programs < n_train:
            n_programs += 1
            worded = [make_task(program, "train", rng, book)]
            for _ in range(renderings - 1):
                task = make_task(program, "train", extra_rng, book)
                if all(task.request != other.request for other in worded):
                    worded.append(task)
            train += worded

    heldout = []
    pairs = list(config.exclude_pairs) or list(HELDOUT_PAIRS)
    pairs.sort()
    attempt = misses = 0
    while len(heldout) < n_heldout:
        pair = pairs[attempt % len(pairs)]
        attempt += 1
        program = generator.program(require_pair=pair)
        key = program_key(program)
        if key in seen or key in exclude_from_eval:
            misses += 1
            if misses > MAX_MISSES:
                raise UserError(f"could draw only {len(heldout)} distinct held-out programs; lower n_heldout.")
            continue
        misses = 0
        seen.add(key)
        heldout.append(make_task(program, "heldout", rng, book))
    return {"train": train, "indist": indist, "heldout": heldout, "phrasing": phrasing}


def structural_split_violations(
    train: list[Task], heldout: list[Task], heldout_pairs=HELDOUT_PAIRS
) -> list[str]:
    """Why ``train`` and ``heldout`` are not split by structure; an empty list when they are.

    Train tasks must contain none of ``heldout_pairs`` and every held-out task must contain at
    least one (an (outer, inner) operator pair, following signal names to their definitions).
    """
    held = set(map(tuple, heldout_pairs))
    problems = []
    for task in train:
        leaked = structural_pairs(parse(task.program)) & held
        if leaked:
            problems.append(f"{task.task_id} ({task.split}) contains held-out pair(s) {sorted(leaked)}")
    for task in heldout:
        if not structural_pairs(parse(task.program)) & held:
            problems.append(f"{task.task_id} ({task.split}) contains no held-out pair")
    return problems


def phrasing_split_violations(splits: dict[str, list[Task]], book: PhraseBook | None = None,
                              other_training_text: dict[str, str] | None = None) -> list[str]:
    """Why the splits are not held out by phrasing; an empty list when they are.

    Every task outside the ``phrasing`` split must be worded by train families only and show no
    heldout family's marker; every ``phrasing`` task must use exactly one heldout family. Text
    the model also trains on (``other_training_text``: the manual's pages, by name) must show
    no heldout marker either, line by line (a document's line breaks are not a request's).
    """
    book = book or load_phrasebook()
    known, held = book.train_ids | book.heldout_ids, book.heldout_ids
    problems = []
    for split, tasks in splits.items():
        for task in tasks:
            unknown = set(task.families) - known
            used = set(task.families) & held
            if not task.families or unknown:
                problems.append(f"{task.task_id} ({split}) names unknown families {sorted(unknown)}")
            elif split == "phrasing" and len(used) != 1:
                problems.append(f"{task.task_id} (phrasing) uses {len(used)} heldout families {sorted(used)}, not 1")
            elif split != "phrasing":
                if used:
                    problems.append(f"{task.task_id} ({split}) is worded by heldout family {sorted(used)[0]}")
                for family, marker in book.leaks(task.request):
                    problems.append(f"{task.task_id} ({split}) shows heldout family {family}'s marker "
                                    f"'{marker}': {task.request!r}")
    for name, text in (other_training_text or {}).items():
        for number, line in enumerate(text.splitlines(), start=1):
            for family, marker in book.leaks(line):
                problems.append(f"{name}, line {number} shows heldout family {family}'s marker '{marker}': {line!r}")
    return problems


# ---- rows in the formats the trainers read ---------------------------------------------------


def chat_rows(tasks: list[Task], system: bool = True) -> list[dict]:
    """Chat SFT rows: ``{"messages": [system?, user request, assistant program]}``."""
    return [{"messages": t.messages(system, with_answer=True)} for t in tasks]


def prompt_rows(tasks: list[Task], system: bool = True) -> list[dict]:
    """RL prompt rows: ``{"prompt": [messages], "reference": program, "task_id": ..., "families": [ids]}``."""
    return [{"prompt": t.messages(system), "reference": t.program, "task_id": t.task_id, "families": list(t.families)}
            for t in tasks]


def eval_rows(tasks: list[Task], system: bool = True) -> list[dict]:
    """Eval rows: prompt rows plus the ``split`` they come from."""
    return [{**row, "split": t.split} for row, t in zip(prompt_rows(tasks, system), tasks)]
