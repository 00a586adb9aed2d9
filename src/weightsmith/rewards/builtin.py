"""Generic rewards / metrics that need no domain knowledge."""

from __future__ import annotations

import re
import unicodedata

from weightsmith.rewards import completion_text, reward


def _normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


@reward("exact_match")
def exact_match(completions: list, answer: list[str], **_: object) -> list[float]:
    """1.0 when the completion, stripped, equals ``answer`` exactly."""
    return [float(completion_text(c).strip() == str(a).strip()) for c, a in zip(completions, answer)]


@reward("normalized_match")
def normalized_match(completions: list, answer: list[str], **_: object) -> list[float]:
    """1.0 when the completions equal ``answer`` after case, punctuation and space folding."""
    return [float(_normalize(completion_text(c)) == _normalize(str(a))) for c, a in zip(completions, answer)]


@reward("contains_answer")
def contains_answer(completions: list, answer: list[str], **_: object) -> list[float]:
    """1.0 when ``answer`` appears in the completion (after normalization)."""
    return [float(_normalize(str(a)) in _normalize(completion_text(c))) for c, a in zip(completions, answer)]


@reward("token_f1")
def token_f1(completions: list, answer: list[str], **_: object) -> list[float]:
    """Word-overlap F1 between completion and ``answer`` (SQuAD-style): graded, so RL has signal."""
    scores = []
    for c, a in zip(completions, answer):
        pred, gold = _normalize(completion_text(c)).split(), _normalize(str(a)).split()
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
    it produces a whole right answer.
    """
    scores = []
    for c, a in zip(completions, answer):
        pred, gold = " ".join(completion_text(c).split()), " ".join(str(a).split())
        fs = []
        for n in (1, 2, 3):
            p, g = _char_ngrams(pred, n), _char_ngrams(gold, n)
            overlap = sum(min(count, g.get(gram, 0)) for gram, count in p.items())
            if not p or not g or overlap == 0:
                fs.append(0.0)
                continue
            precision, recall = overlap / sum(p.values()), overlap / sum(g.values())
            fs.append(2 * precision * recall / (precision + recall))
        scores.append(sum(fs) / len(fs))
    return scores
