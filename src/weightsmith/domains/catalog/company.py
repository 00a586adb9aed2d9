"""Halvard Flow Controls, a fictional valve maker: its parts, their facts, and its purchasing policy.

Every fact is drawn from a seeded generator, so the same seed always gives the same company.
A part has a code (``BV-4417``), a name (``Kestrel ball valve``), a pressure rating, a material,
a supplier and a purchase tier; the purchasing policy names who approves each tier, so "who
approves buying this part?" takes two facts: the part's tier, then the policy's approver.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

COMPANY = "Halvard Flow Controls"

# (kind of part, code prefix)
PART_KINDS = (
    ("ball valve", "BV"),
    ("gate valve", "GV"),
    ("check valve", "CV"),
    ("pressure regulator", "PR"),
    ("strainer", "ST"),
    ("butterfly valve", "FV"),
)
PRESSURE_RATINGS = ("10 bar", "16 bar", "25 bar", "40 bar", "63 bar", "100 bar")
MATERIALS = ("brass", "bronze", "ductile iron", "carbon steel", "stainless steel", "PVC")
SUPPLIERS = ("Hollis & Grant", "Marrow Forge", "Tessaly Castings", "Oberlin Metalworks", "Quarry Lane Supply")
TIERS = ("A", "B", "C", "D")
# The purchasing policy: who approves a purchase of each tier, and the spending limit it names.
APPROVERS = {
    "A": ("the shift supervisor", "500 euros"),
    "B": ("the plant manager", "5,000 euros"),
    "C": ("the procurement director", "50,000 euros"),
    "D": ("the finance director", "any amount"),
}
# The facts a question can ask for, and how many answers each could have (for the chance rate).
FACT_OPTIONS = {
    "pressure": len(PRESSURE_RATINGS),
    "material": len(MATERIALS),
    "supplier": len(SUPPLIERS),
    "tier": len(TIERS),
    "approver": len(APPROVERS),
}

# Syllables for the invented model-line names (Kestrel is a real word; these are not).
_ONSETS = ("b", "br", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p", "r", "s", "st", "t", "tr", "v", "z")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ei", "ou")
_CODAS = ("l", "n", "r", "s", "th", "m", "k", "x", "nd", "rk")


@dataclass(frozen=True)
class Part:
    """One catalog part and its facts."""

    code: str  # e.g. "BV-4417": the kind's prefix and four digits
    line: str  # the model line, e.g. "Dravik"
    kind: str  # e.g. "ball valve"
    pressure: str  # e.g. "25 bar"
    material: str
    supplier: str
    tier: str  # "A".."D"

    @property
    def name(self) -> str:
        """E.g. "Dravik ball valve"."""
        return f"{self.line} {self.kind}"

    @property
    def approver(self) -> str:
        """Who approves a purchase of this part, by the purchasing policy."""
        return APPROVERS[self.tier][0]


def _line_names(rng: random.Random, count: int) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < count:
        syllables = rng.choice((2, 2, 3))
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables - 1))
        word += rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
        # Prefixes would let one name give away another ("Dravik" in "Draviken"): whole names only.
        if word in seen or any(word.startswith(s) or s.startswith(word) for s in seen) or not 5 <= len(word) <= 9:
            continue
        seen.add(word)
        names.append(word.capitalize())
    return names


def make_parts(count: int, seed: int) -> list[Part]:
    """``count`` parts with unique codes and unique model-line names, facts drawn uniformly at random.

    Args:
        count: how many parts (at most 6 kinds x 9,000 codes).
        seed: the same seed gives the same parts, in the same order.
    """
    rng = random.Random(f"halvard-parts-{seed}")
    lines = _line_names(rng, count)
    codes: set[str] = set()
    parts = []
    for line in lines:
        kind, prefix = rng.choice(PART_KINDS)
        while (code := f"{prefix}-{rng.randint(1000, 9999)}") in codes:
            pass
        codes.add(code)
        parts.append(
            Part(
                code=code,
                line=line,
                kind=kind,
                pressure=rng.choice(PRESSURE_RATINGS),
                material=rng.choice(MATERIALS),
                supplier=rng.choice(SUPPLIERS),
                tier=rng.choice(TIERS),
            )
        )
    return parts


def split_parts(parts: list[Part], n_heldout: int, seed: int) -> tuple[list[Part], list[Part]]:
    """(training parts, held-out parts): the held-out ones appear in the documents only."""
    order = list(range(len(parts)))
    random.Random(f"halvard-split-{seed}").shuffle(order)
    held = set(order[:n_heldout])
    return [p for i, p in enumerate(parts) if i not in held], [p for i, p in enumerate(parts) if i in held]
