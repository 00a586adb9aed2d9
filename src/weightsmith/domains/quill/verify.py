"""Is a candidate Quill program right? Run it and compare, never compare strings.

A candidate is correct when it parses and its answer (the portfolio weights, else the last
statement's output) equals the reference program's answer on every verification panel, within
tolerance, with NaN in exactly the same places. So ``rank(close - delay(close, 5))`` is as right
as ``rank(delta(close, 5))``, and names do not matter.

Registered rewards (``weightsmith.rewards``): ``quill_exec`` (1 / 0.1 / 0), ``quill_exec_steps``
(1, else credit per reference statement computed right: the GRPO reward), ``quill_exec_match``
(execution accuracy) and ``quill_parses`` (parse rate). Reference answers and verdicts are
cached: GRPO scores the same references every step and often the same completions.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np

from weightsmith.domains.quill.errors import QuillSyntaxError
from weightsmith.domains.quill.interp import run
from weightsmith.domains.quill.nodes import PORTFOLIO_OUTPUT, Portfolio
from weightsmith.domains.quill.panel import Panel, make_panel
from weightsmith.domains.quill.parser import parse
from weightsmith.errors import UserError
from weightsmith.rewards import completion_text, reward

log = logging.getLogger(__name__)

VERIFY_SEEDS = (1001, 1002, 1003)
PANEL_DAYS, PANEL_ASSETS, PANEL_SECTORS = 80, 12, 3
RTOL, ATOL = 1e-6, 1e-9
PARTIAL_CREDIT = 0.1  # parses but wrong: a little better than noise, far from right
STEP_CREDIT = 0.5  # quill_exec_steps: the most a wrong program can earn, shared by the reference's statements
MAX_PROGRAM_CHARS = 4000  # a completion longer than this is rambling, not a program

INVALID, PARSES, CORRECT = 0, 1, 2
TIER_SCORES = {INVALID: 0.0, PARSES: PARTIAL_CREDIT, CORRECT: 1.0}


@lru_cache(maxsize=None)
def verification_panels() -> tuple[Panel, ...]:
    return tuple(make_panel(seed, days=PANEL_DAYS, assets=PANEL_ASSETS, sectors=PANEL_SECTORS)
                 for seed in VERIFY_SEEDS)


def extract_program(text: str) -> str:
    """The program inside a completion: the first fenced block if there is one, else the text."""
    if "```" in text:
        body = text.split("```", 2)[1]
        first_line, _, rest = body.partition("\n")
        # The fence may carry a language tag (```quill); a program never starts with a lone word.
        text = rest if first_line.strip().isidentifier() else body
    return text.strip()


def answer(program_source: str) -> tuple[np.ndarray, ...]:
    """The program's answer on each verification panel. Raises QuillSyntaxError if it does not parse."""
    program = parse(program_source)
    return tuple(run(program, panel)[program.result_name] for panel in verification_panels())


def answers_equal(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> bool:
    """Same kind, same shape, NaN at the same cells and numbers equal within RTOL/ATOL."""
    for x, y in zip(a, b, strict=True):
        if x.shape != y.shape or (x.dtype == bool) != (y.dtype == bool):
            return False
        if x.dtype == bool:
            if not np.array_equal(x, y):
                return False
            continue
        missing = np.isnan(x)
        if not np.array_equal(missing, np.isnan(y)):
            return False
        if not np.allclose(x[~missing], y[~missing], rtol=RTOL, atol=ATOL):
            return False
    return True


class _LRU(OrderedDict):
    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def hit(self, key):
        """The cached value (moved to the newest end), or None."""
        if key not in self:
            return None
        self.move_to_end(key)
        return self[key]

    def put(self, key, value):
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.size:
            self.popitem(last=False)
        return value


# ~27 KB per reference (3 panels x 80 x 12 floats): 4096 of them stay under ~110 MB.
_REFERENCE_ANSWERS = _LRU(4096)
_VERDICTS = _LRU(200_000)
_REFERENCE_STEPS = _LRU(512)  # per-statement answers: a GRPO step uses a few dozen references
_STEP_SCORES = _LRU(200_000)


def reference_answer(reference: str) -> tuple[np.ndarray, ...]:
    if (cached := _REFERENCE_ANSWERS.hit(reference)) is not None:
        return cached
    try:
        result = answer(reference)
    except QuillSyntaxError as exc:
        raise UserError(f"the reference program does not parse, so nothing can be scored against it: {exc}") from exc
    return _REFERENCE_ANSWERS.put(reference, result)


def verdict(completion: object, reference: str) -> int:
    """INVALID (0), PARSES (1) or CORRECT (2) for one completion against one reference program."""
    candidate = extract_program(completion_text(completion))
    key = (candidate, reference)
    if (cached := _VERDICTS.hit(key)) is not None:
        return cached
    expected = reference_answer(reference)
    if not candidate or len(candidate) > MAX_PROGRAM_CHARS:
        return _VERDICTS.put(key, INVALID)
    try:
        program = parse(candidate)
    except QuillSyntaxError:
        return _VERDICTS.put(key, INVALID)
    try:
        got = tuple(run(program, panel)[program.result_name] for panel in verification_panels())
    except Exception:  # noqa: BLE001 - a candidate must never crash a training step
        log.exception("quill: a program that type-checked failed to run: %r", candidate)
        return _VERDICTS.put(key, PARSES)
    return _VERDICTS.put(key, CORRECT if answers_equal(got, expected) else PARSES)


def score(completion: object, reference: str) -> float:
    """1.0 correct, PARTIAL_CREDIT parses but wrong, 0.0 otherwise."""
    return TIER_SCORES[verdict(completion, reference)]


def statement_answers(source: str) -> list[tuple[str, tuple[np.ndarray, ...]]]:
    """(kind, answer on each panel) of each statement of the longest run of leading lines that parses.

    A program whose last line names an undefined signal still shows what its first lines compute.
    """
    lines = [line for line in source.splitlines() if line.strip()]
    for end in range(min(len(lines), 64), 0, -1):
        try:
            program = parse("\n".join(lines[:end]))
        except QuillSyntaxError:
            continue
        try:
            outputs = [run(program, panel) for panel in verification_panels()]
        except Exception:  # noqa: BLE001 - a candidate must never crash a training step
            return []
        return [(type(stmt).__name__,
                 tuple(out[PORTFOLIO_OUTPUT if isinstance(stmt, Portfolio) else stmt.name] for out in outputs))
                for stmt in program.statements]
    return []


def step_score(completion: object, reference: str) -> float:
    """1.0 correct; else STEP_CREDIT x the share of the reference's statements (when it has several)
    that the candidate's statement at the same place computes; nothing for a candidate with more
    statements than the reference, for a one-statement reference, or for merely parsing. A right
    program followed by a line that does not parse is wrong, and earns what its statements compute."""
    if verdict(completion, reference) == CORRECT:
        return 1.0
    candidate = extract_program(completion_text(completion))
    key = (candidate, reference)
    if (cached := _STEP_SCORES.hit(key)) is not None:
        return cached
    expected = _REFERENCE_STEPS.hit(reference)
    if expected is None:
        expected = _REFERENCE_STEPS.put(reference, statement_answers(reference))
    got = statement_answers(candidate) if len(expected) > 1 and len(candidate) <= MAX_PROGRAM_CHARS else []
    if not got or len(got) > len(expected):
        return _STEP_SCORES.put(key, 0.0)
    right = sum(kind == want_kind and answers_equal(answers, want)
                for (kind, answers), (want_kind, want) in zip(got, expected))
    return _STEP_SCORES.put(key, STEP_CREDIT * right / len(expected))


@reward("quill_exec")
def quill_exec(completions: list, reference: list[str], **_: object) -> list[float]:
    """GRPO reward: 1.0 when the program computes the reference's answer, 0.1 when it only parses."""
    return [score(c, r) for c, r in zip(completions, reference, strict=True)]


@reward("quill_exec_steps")
def quill_exec_steps(completions: list, reference: list[str], **_: object) -> list[float]:
    """GRPO reward with no shortcut: 1.0 when the program computes the reference's answer; a wrong one
    earns up to STEP_CREDIT for the reference's statements it computes at the same place.

    quill_exec's credit for merely parsing is a shortcut: a portfolio line that names an undefined
    signal does not parse, a program without that line does, and 150 GRPO steps on it learned to
    drop the portfolio line from every multi-statement answer (89 of 89). Here dropping a statement
    never earns more than writing it wrong.
    """
    return [step_score(c, r) for c, r in zip(completions, reference, strict=True)]


@reward("quill_exec_match")
def quill_exec_match(completions: list, reference: list[str], **_: object) -> list[float]:
    """KPI execution accuracy: 1.0 when the program computes the reference's answer."""
    return [float(verdict(c, r) == CORRECT) for c, r in zip(completions, reference, strict=True)]


@reward("quill_parses")
def quill_parses(completions: list, **_: object) -> list[float]:
    """KPI parse rate: 1.0 when the completion is a well-typed Quill program."""
    out = []
    for completion in completions:
        text = extract_program(completion_text(completion))
        try:
            ok = bool(text) and len(text) <= MAX_PROGRAM_CHARS and parse(text) is not None
        except QuillSyntaxError:
            ok = False
        out.append(float(ok))
    return out


def preference_pairs(
    samples_by_prompt: Mapping[str, Sequence] | Sequence,
    references: Mapping[str, str] | Sequence[str],
    max_pairs_per_prompt: int = 4,
    reference_fallback: bool = False,
) -> list[dict]:
    """DPO pairs from sampled completions, ranked by the verifier (correct > parses > invalid).

    Args:
        samples_by_prompt: ``{prompt: [completion, ...]}``, or a sequence of ``(prompt, completions)``
            tuples or ``{"prompt": ..., "completions": [...]}`` dicts (prompts may be chat messages).
        references: the reference program per prompt: a mapping with the same keys, or a sequence
            in the same order.
        max_pairs_per_prompt: at most this many pairs per prompt; hard negatives (programs that
            parse but are wrong) are paired first.
        reference_fallback: when no sample is correct, use the reference program as ``chosen``
            (in the same form as the samples) against every lower-ranked sample.

    Returns:
        ``[{"prompt", "chosen", "rejected"}]`` in TRL's preference format; a prompt whose samples
        all rank equal contributes nothing.
    """
    from weightsmith.synth.pairs import rank_pairs

    pairs = []
    for prompt, completions, reference in _groups(samples_by_prompt, references):
        distinct = {}  # one sample per distinct program, in sample order
        for completion in completions:
            distinct.setdefault(extract_program(completion_text(completion)), completion)
        samples = list(distinct.values())
        tiers = [verdict(completion, reference) for completion in samples]
        pairs += rank_pairs(
            prompt, samples, [TIER_SCORES[tier] for tier in tiers],
            pairs_per_prompt=max_pairs_per_prompt,
            min_margin=PARTIAL_CREDIT / 2,  # any step down the tiers
            reference=_like(completions[0], reference) if reference_fallback else None,
        )
    return pairs


def _groups(samples_by_prompt, references):
    if isinstance(samples_by_prompt, Mapping):
        items = list(samples_by_prompt.items())
    else:
        items = [(s["prompt"], s["completions"]) if isinstance(s, Mapping) else tuple(s) for s in samples_by_prompt]
    if isinstance(references, Mapping):
        try:
            refs = [references[prompt] for prompt, _ in items]
        except (KeyError, TypeError) as exc:
            raise UserError(f"preference_pairs: no reference for prompt {exc}; give references with the "
                            "same keys as samples_by_prompt, or as a list in the same order.") from exc
    else:
        refs = list(references)
        if len(refs) != len(items):
            raise UserError(f"preference_pairs: {len(items)} prompts but {len(refs)} references.")
    return [(prompt, list(completions), ref) for (prompt, completions), ref in zip(items, refs) if completions]


def _like(example: object, text: str) -> object:
    """``text`` in the same form as ``example``: a string, or one assistant chat message."""
    if isinstance(example, list):
        return [{"role": "assistant", "content": text}]
    return text
