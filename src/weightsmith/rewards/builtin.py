"""Generic rewards / metrics that need no domain knowledge."""

from __future__ import annotations

import re
import unicodedata

from weightsmith.rewards import completion_text, reward


def _normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


def _folded(text: str) -> str:
    return " ".join(text.split())


def normalizes_to_nothing(answer: object) -> bool:
    """True for a gold answer with text but no letter or digit ("+", "-", "..."): the normalizing
    metrics compare it as written (whitespace folded) instead, see :func:`_comparable`."""
    return bool(_folded(str(answer))) and not _normalize(str(answer))


def _comparable(completion: object, answer: object) -> tuple[str, str]:
    """(completion, gold) as the normalizing metrics compare them.

    Normalized, unless the gold normalizes to nothing ("+", "-"): then both as written with
    whitespace folded, since "" == "" would let an answer of "...." match every such gold. A
    gold that is empty either way stays empty, and every metric scores it 0: nothing can match it.
    """
    gold = _normalize(str(answer))
    if gold:
        return _normalize(completion_text(completion)), gold
    return _folded(completion_text(completion)), _folded(str(answer))


# Scripts written without spaces between words: there a word boundary cannot be asked for.
_UNSPACED = re.compile(r"[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def _contains_words(text: str, needle: str) -> bool:
    """``needle`` occurs in ``text`` (both whitespace-folded) as whole words: "4" is not in "42",
    "no" is not in "i know"; in Chinese, Japanese, Thai and the like, any occurrence counts."""

    def boundary(neighbour: str, edge: str) -> bool:
        return neighbour == " " or bool(_UNSPACED.match(neighbour) or _UNSPACED.match(edge))

    start = text.find(needle)
    while start != -1:
        end = start + len(needle)
        before = text[start - 1] if start else " "
        after = text[end] if end < len(text) else " "
        if boundary(before, needle[0]) and boundary(after, needle[-1]):
            return True
        start = text.find(needle, start + 1)
    return False


@reward("exact_match")
def exact_match(completions: list, answer: list[str], **_: object) -> list[float]:
    """1.0 when the completion, stripped, equals ``answer`` exactly; an empty answer matches nothing."""
    scores = []
    for c, a in zip(completions, answer):
        gold = str(a).strip()
        scores.append(float(bool(gold) and completion_text(c).strip() == gold))
    return scores


@reward("normalized_match")
def normalized_match(completions: list, answer: list[str], **_: object) -> list[float]:
    """1.0 when the completions equal ``answer`` after case, punctuation and space folding.

    An answer with no letter or digit ("+") is compared as written instead; an empty one matches nothing.
    """
    scores = []
    for c, a in zip(completions, answer):
        pred, gold = _comparable(c, a)
        scores.append(float(bool(gold) and pred == gold))
    return scores


@reward("contains_answer")
def contains_answer(completions: list, answer: list[str], **_: object) -> list[float]:
    """1.0 when ``answer`` appears in the completion as whole words (after normalization).

    An answer with no letter or digit ("+") is looked for as written, between spaces; an empty
    one is found nowhere.
    """
    scores = []
    for c, a in zip(completions, answer):
        text, needle = _comparable(c, a)
        scores.append(float(bool(needle) and _contains_words(text, needle)))
    return scores


@reward("token_f1")
def token_f1(completions: list, answer: list[str], **_: object) -> list[float]:
    """Word-overlap F1 between completion and ``answer`` (SQuAD-style): graded, so RL has signal.

    Words after normalization, or as written when the answer normalizes to nothing; an empty
    answer or completion scores 0.
    """
    scores = []
    for c, a in zip(completions, answer):
        text, gold_text = _comparable(c, a)
        pred, gold = text.split(), gold_text.split()
        common = sum(min(pred.count(w), gold.count(w)) for w in set(gold))
        if not pred or not gold or common == 0:
            scores.append(0.0)
            continue
        precision, recall = common / len(pred), common / len(gold)
        scores.append(2 * precision * recall / (precision + recall))
    return scores


def _char_ngrams(text: str, n: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    for i in range(len(text) - n + 1):
        gram = text[i : i + n]
        counts[gram] = counts.get(gram, 0) + 1
    return counts


@reward("chrf")
def chrf(completions: list, answer: list[str], **_: object) -> list[float]:
    """Character n-gram F-score (chrF, n = 1..3, beta = 1) against ``answer``.

    Graded and rarely exactly zero, so it gives an untrained model's RL a signal long before
    it produces a whole right answer. Only the n-gram orders the answer has count (a one-character
    answer is scored on characters alone), so an exact answer always scores 1.0; an empty answer
    or completion scores 0.
    """
    scores = []
    for c, a in zip(completions, answer):
        pred, gold = _folded(completion_text(c)), _folded(str(a))
        fs = []
        for n in (1, 2, 3):
            p, g = _char_ngrams(pred, n), _char_ngrams(gold, n)
            if not g:
                continue  # the answer is shorter than n: this order says nothing about it
            overlap = sum(min(count, g.get(gram, 0)) for gram, count in p.items())
            if overlap == 0:
                fs.append(0.0)
                continue
            precision, recall = overlap / sum(p.values()), overlap / sum(g.values())
            fs.append(2 * precision * recall / (precision + recall))
        scores.append(sum(fs) / len(fs) if fs else 0.0)
    return scores
