"""Quill tasks: a request in English and the program that answers it, split three ways.

Splits:
  train    programs drawn with the held-out operator pairs excluded
  indist   a random share of the same draw (never a program that is also in train)
  heldout  programs that each contain one of HELDOUT_PAIRS, which train never contains

Programs are de-duplicated by structure (names replaced by placeholders), so ``signal mom =
rank(close)`` in train keeps ``signal alpha = rank(close)`` out of the test sets.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from weightsmith.domains.quill.describe import describe_program
from weightsmith.domains.quill.generate import HELDOUT_PAIRS, GeneratorConfig, ProgramGenerator, structural_pairs
from weightsmith.domains.quill.nodes import (
    Call, Expr, Portfolio, Program, Ref, Signal, depth, format_program, statement_exprs)
from weightsmith.domains.quill.parser import parse
from weightsmith.domains.quill.verify import score, verification_panels
from weightsmith.errors import UserError

GENERATOR_VERSION = "quill-tasks-1"
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


def make_task(program: Program, split: str, rng: random.Random) -> Task:
    source = format_program(program)
    request = describe_program(program, rng)
    digest = hashlib.sha1(f"{split}\n{request}\n{source}".encode()).hexdigest()[:12]
    return Task(
        task_id=f"quill-{split}-{digest}",
        request=request,
        program=source,
        split=split,
        depth=max(depth(e) for s in program.statements for e in statement_exprs(s)),
        n_statements=len(program.statements),
    )


def make_splits(
    seed: int = 0,
    n_train: int = 2000,
    n_test: int = 200,
    n_heldout: int | None = None,
    config: GeneratorConfig | None = None,
    exclude_from_eval: frozenset[str] = frozenset(),
) -> dict[str, list[Task]]:
    """Draw the train, indist and heldout task lists; the same seed gives the same lists.

    Args:
        n_test: size of the in-distribution test split.
        n_heldout: size of the held-out-by-structure split (defaults to n_test).
        exclude_from_eval: program keys (see ``program_key``) that must not be evaluated on,
            e.g. the programs printed in the manual the model pre-trains on.
    """
    n_heldout = n_test if n_heldout is None else n_heldout
    config = config or GeneratorConfig()
    rng = random.Random(seed)
    generator = ProgramGenerator(rng, verification_panels()[0], config)
    seen: set[str] = set()

    pool: list[tuple[Program, str]] = []
    eligible = 0
    misses = 0  # draws in a row that gave nothing new: the program space is used up
    while len(pool) < n_train + n_test or eligible < n_test:
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
    train, indist = [], []
    for program, key in pool:
        if len(indist) < n_test and key not in exclude_from_eval:
            indist.append(make_task(program, "indist", rng))
        elif len(train) < n_train:
            train.append(make_task(program, "train", rng))

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
        heldout.append(make_task(program, "heldout", rng))
    return {"train": train, "indist": indist, "heldout": heldout}


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


# ---- rows in the formats the trainers read ---------------------------------------------------


def chat_rows(tasks: list[Task], system: bool = True) -> list[dict]:
    """Chat SFT rows: ``{"messages": [system?, user request, assistant program]}``."""
    return [{"messages": t.messages(system, with_answer=True)} for t in tasks]


def prompt_rows(tasks: list[Task], system: bool = True) -> list[dict]:
    """RL prompt rows: ``{"prompt": [messages], "reference": program, "task_id": ...}``."""
    return [{"prompt": t.messages(system), "reference": t.program, "task_id": t.task_id} for t in tasks]


def eval_rows(tasks: list[Task], system: bool = True) -> list[dict]:
    """Eval rows: prompt rows plus the ``split`` they come from."""
    return [{**row, "split": t.split} for row, t in zip(prompt_rows(tasks, system), tasks)]
