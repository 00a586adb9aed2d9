"""Halvard's documents and questions, as text: the catalog, the purchasing policy, restatements, QA.

The documents are written the way a company writes them: each part has one catalog entry, its
facts stated once, in one of a few house styles, with pronouns after the heading. That is the
situation in which pre-training stores facts a model can complete but not *answer questions*
about for parts it was never asked about.

Restatements are the knowledge augmentation of Allen-Zhu & Li, "Physics of Language Models,
Part 3.1: Knowledge Storage and Extraction" (2023, arXiv:2309.14316): each part's facts stated
again in other words (a template drawn per fact), in a shuffled order, each sentence naming the
part in full (by name and code) instead of "it". They found that with such restatements in
the pre-training text, QA fine-tuning on some people lets a model answer about *other* people
(their "multi5+permute+fullname" biographies: 96% against 9.7% without); without them the
knowledge is stored, but tied to its context rather than to the name.
"""

from __future__ import annotations

import random
import re

from weightsmith.domains.catalog.company import APPROVERS, COMPANY, TIERS, Part

# -- the catalog as written: one entry per part ---------------------------------------------------
# Each style is a list of (text before the fact, fact); the probe completes the text up to a fact.
_ENTRY_STYLES = (
    (("The {line} is a {kind} made of ", "material"), (", rated to ", "pressure"), (". We buy it from ", "supplier"),
     ("; it is a tier ", "tier"), (" purchase.", None)),
    (("Built in ", "material"), (" and rated to ", "pressure"), (", this {kind} comes from ", "supplier"),
     (". Purchase tier ", "tier"), (".", None)),
    (("Supplied by ", "supplier"), (". A {kind} in ", "material"), (", rated to ", "pressure"),
     (". Tier ", "tier"), (" purchase.", None)),
)

# -- restatements: one template pool per fact; {ref} names the part in full ----------------------
_RESTATE = {
    "pressure": (
        "{Ref} is rated to {pressure}.",
        "{Ref} has a pressure rating of {pressure}.",
        "The pressure rating of {ref} is {pressure}.",
        "{Ref} can take pressures up to {pressure}.",
    ),
    "material": (
        "{Ref} is made of {material}.",
        "The body of {ref} is {material}.",
        "{Ref} is built in {material}.",
        "The material of {ref} is {material}.",
    ),
    "supplier": (
        "{Ref} is supplied by {supplier}.",
        "We buy {ref} from {supplier}.",
        "{supplier} supplies {ref}.",
        "The supplier of {ref} is {supplier}.",
    ),
    "tier": (
        "{Ref} is a tier {tier} purchase.",
        "{Ref} falls under purchase tier {tier}.",
        "The purchase tier of {ref} is {tier}.",
        "Buying {ref} is a tier {tier} purchase.",
    ),
}

# -- questions a person asks about a part ---------------------------------------------------------
QUESTIONS = {
    "pressure": (
        "What pressure is {ref} rated to?",
        "What is the pressure rating of {ref}?",
        "How much pressure can {ref} take?",
    ),
    "material": (
        "What is {ref} made of?",
        "Which material is {ref} made of?",
        "What material is {ref}?",
    ),
    "supplier": (
        "Who supplies {ref}?",
        "Which supplier do we buy {ref} from?",
        "Where do we buy {ref}?",
    ),
    "tier": (
        "What purchase tier is {ref}?",
        "Which purchase tier does {ref} fall under?",
        "What tier is a purchase of {ref}?",
    ),
    "approver": (
        "Who approves a purchase of {ref}?",
        "Who has to sign off on buying {ref}?",
        "Whose approval do I need to buy {ref}?",
    ),
}
QUESTION_TYPES = tuple(QUESTIONS)


ANSWER_STYLES = ("sentence", "short")

# A sentence answer restates the part as the question named it, then the fact, in the words the
# restatements use (the first template of each pool below), e.g. "BV-4417 is made of bronze.".
_SENTENCE_ANSWERS = {
    "pressure": "{Ref} is rated to {pressure}.",
    "material": "{Ref} is made of {material}.",
    "supplier": "{Ref} is supplied by {supplier}.",
    "tier": "{Ref} is a tier {tier} purchase.",
    "approver": "{Ref} is a tier {tier} purchase, so {approver} approves it.",
}


def answer(part: Part, question_type: str, style: str = "sentence", ref: str | None = None) -> str:
    """The reference answer to a question of ``question_type`` about ``part``.

    Args:
        style: ``"short"``: the fact alone ("bronze", "Tier B", for an approver "Tier B, so the
            plant manager."). ``"sentence"``: the part as the question named it, then the fact in
            the documents' words ("BV-4417 is made of bronze."): the answer's last words are then
            a completion the model practised in pre-training, where a short answer is a new
            mapping from question to fact that fine-tuning must learn.
        ref: how the question named the part (``"the Dravik ball valve"``, ``"BV-4417"``, ``"part BV-4417"``);
            needed for sentence answers.

    An approver answer names the tier first in both styles (a one-step chain of thought: the tier
    is in the catalog, its approver in the purchasing policy).
    """
    if style == "sentence":
        if ref is None:
            raise ValueError("a sentence answer restates the part as the question named it: give ref")
        return _SENTENCE_ANSWERS[question_type].format(Ref=_capitalized(ref), approver=part.approver, **_facts(part))
    if style != "short":
        raise ValueError(f"unknown answer style {style!r}; use one of {ANSWER_STYLES}")
    if question_type == "approver":
        return f"Tier {part.tier}, so {part.approver}."
    if question_type == "tier":
        return f"Tier {part.tier}"
    return getattr(part, question_type)


def fact_pattern(part: Part, question_type: str) -> str:
    """A regular expression that finds the fact a question asks for in any answer, in either style
    (``regex_match``): the value as whole words; for an approver, the part's tier and then its approver."""
    def word(text: str) -> str:
        return r"(?<![\w-])" + re.escape(text).replace("\\ ", " ") + r"(?![\w-])"

    if question_type == "tier":
        return rf"\b[Tt]ier {part.tier}\b"
    if question_type == "approver":
        return rf"\b[Tt]ier {part.tier}\b.*" + word(part.approver.removeprefix("the "))
    return word(getattr(part, question_type))


def _refs(part: Part) -> tuple[str, ...]:
    """The ways a question names a part: by name, or by code."""
    return (f"the {part.name}", part.code, f"part {part.code}")


def _full_refs(part: Part) -> tuple[str, ...]:
    """The ways a restatement names a part: by name and code together, so every fact is stated next
    to both (a fact stated only next to the name would need a second hop to answer by code)."""
    return (f"the {part.name} ({part.code})", f"{part.code}, the {part.name},", f"part {part.code} (the {part.name})")


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def _facts(part: Part) -> dict[str, str]:
    return {"code": part.code, "name": part.name, "line": part.line, "kind": part.kind, "pressure": part.pressure,
            "material": part.material, "supplier": part.supplier, "tier": part.tier}


def _entry_pieces(part: Part, rng: random.Random) -> list[tuple[str, str | None]]:
    style = _ENTRY_STYLES[rng.randrange(len(_ENTRY_STYLES))]
    facts = _facts(part)
    return [(text.format(**facts), fact) for text, fact in style]


def catalog_entries(parts: list[Part], seed: int) -> list[tuple[Part, str, list[tuple[str, str]]]]:
    """Per part: its catalog entry (Markdown), and the probes ``(text up to a fact, the fact)``."""
    rng = random.Random(f"halvard-catalog-{seed}")
    out = []
    for part in parts:
        facts = _facts(part)
        text = f"## {part.code} {part.name}\n\n"
        probes = []
        for before, fact in _entry_pieces(part, rng):
            text += before
            if fact is not None:
                # The prompt stops before the space: a BPE tokenizer joins it to the next word (" brass").
                probes.append((text.rstrip(" "), facts[fact]))
                text += facts[fact]
        out.append((part, text + "\n", probes))
    return out


def catalog_document(parts: list[Part], seed: int) -> str:
    """The catalog as written: a heading, then one entry per part, each fact stated once."""
    head = (
        f"# {COMPANY} parts catalog\n\n"
        "Every part we stock, with its pressure rating, body material, supplier and purchase tier. "
        "The purchasing policy says who approves each tier.\n\n"
    )
    return head + "\n".join(text for _, text, _ in catalog_entries(parts, seed))


def policy_document() -> str:
    """The purchasing policy: who approves a purchase of each tier (and rules no question asks about)."""
    rules = "\n".join(
        f"- **Tier {tier}** (up to {limit}): approved by {who}." if limit != "any amount"
        else f"- **Tier {tier}** (any amount): approved by {who}."
        for tier, (who, limit) in APPROVERS.items()
    )
    return (
        f"# {COMPANY} purchasing policy\n\n"
        "Every part in the catalog carries a purchase tier, from A to D. The tier, not the price on the order, "
        "decides who must approve a purchase before the order is placed:\n\n"
        f"{rules}\n\n"
        "An order that mixes tiers needs the approval of the highest tier on it. Repeat orders of the same part "
        "within thirty days need no second approval. Orders go to the supplier named in the catalog; buying a "
        "cataloged part from another supplier needs the procurement director's written consent.\n"
    )


_POLICY_RESTATE = (
    "A tier {tier} purchase is approved by {who}.",
    "Purchases of tier {tier} need the approval of {who}.",
    "{Who} approves tier {tier} purchases.",
    "For tier {tier}, the approver is {who}.",
)


def restatements(parts: list[Part], count: int, seed: int) -> str:
    """``count`` extra passages per part (and per policy rule), in a shuffled order, as one document.

    Each passage states every fact of one part once, facts in a random order, each sentence from
    a random template and naming the part in full (name and code). ``count`` = 0 gives an empty string.
    """
    rng = random.Random(f"halvard-restate-{seed}")
    passages = []
    for part in parts:
        facts = _facts(part)
        for _ in range(count):
            order = ["pressure", "material", "supplier", "tier"]
            rng.shuffle(order)
            sentences = []
            for fact in order:
                ref = rng.choice(_full_refs(part))
                template = rng.choice(_RESTATE[fact])
                sentence = template.format(ref=ref, Ref=_capitalized(ref), **facts)
                sentences.append(_capitalized(sentence.replace(",,", ",").replace(",.", ".")))
            passages.append(" ".join(sentences))
    for tier in TIERS:
        who = APPROVERS[tier][0]
        for _ in range(count):
            template = rng.choice(_POLICY_RESTATE)
            passages.append(template.format(tier=tier, who=who, Who=_capitalized(who)))
    rng.shuffle(passages)
    if not passages:
        return ""
    return f"# {COMPANY}: the catalog's facts, restated\n\n" + "\n\n".join(passages) + "\n"


def questions(part: Part, question_type: str, count: int, rng: random.Random) -> list[tuple[str, str]]:
    """``count`` distinct questions of one type about one part (templates x ways of naming it),
    each with the way it names the part: ``[(question, ref)]``."""
    combos = [(t, r) for t in QUESTIONS[question_type] for r in _refs(part)]
    chosen = rng.sample(combos, min(count, len(combos)))
    return [(_capitalized(template.format(ref=ref)), ref) for template, ref in chosen]
