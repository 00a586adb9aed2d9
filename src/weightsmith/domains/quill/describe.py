"""English for Quill: programs rendered as the requests people type, from the phrase book.

``render_request`` draws one family of each kind from the phrase book (phrasebook.yaml) — how
statements are framed, the words for operators and fields, how numbers are written, typos and
casing — and words the program with them, node by node, with ``rng`` picking among each
family's phrasings. A family without a phrasing for something falls back to the family it
names, so every program can be said in every register. The rendering records the ids of the
families it used: that is what the held-out-phrasing split is split on.

The phrasings stay unambiguous where it matters: an arithmetic operand that is itself
arithmetic is bracketed, a phrasing with words after its argument is not used where those
words could belong to something else, and every number is written exactly (or, for a
threshold in a number family, exactly in that unit: 1.3e6 as 1.3m, 0.02 as 200bps).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from decimal import Decimal

from weightsmith.domains.quill.generate import units
from weightsmith.domains.quill.nodes import Call, Expr, Num, Portfolio, Program, Ref, Signal, format_number
from weightsmith.domains.quill.ops import FIELDS, OPS
from weightsmith.domains.quill.phrasebook import (
    IDIOM_PLACEHOLDERS, OPTIONAL_KINDS, WINDOW_PLACEHOLDERS, Family, Phrase, PhraseBook, load_phrasebook)

_INFIX_ARITHMETIC = {"add", "sub", "mul", "div"}
COMPARISONS = {"gt", "ge", "lt", "le", "eq", "ne"}
TILES = {0.1: "decile", 0.2: "quintile", 0.25: "quartile", 0.5: "half"}
# Words that carry a number without writing it (a slip there would lose the number).
NUMBER_WORDS = frozenset(TILES.values()) | {"prev", "yday", "sqrt", "square", "signed"}
KEYWORD_STARTS = ("signal ", "filter ")  # a statement that starts like Quill code keeps its lower case


@dataclass(frozen=True)
class Rendering:
    """A request and the ids of the phrase-book families that worded it (sorted)."""

    text: str
    families: tuple[str, ...]


def render_request(program: Program, rng: random.Random, book: PhraseBook | None = None,
                   force: str | None = None) -> Rendering:
    """Word ``program`` as a request, with families drawn from the train families of ``book``.

    Args:
        book: the phrase book (default: the shipped one).
        force: the id of a family to use for its kind instead of a drawn one (how a held-out
            family words a request). Whether it was used at all is in the result's ``families``:
            a join family, for one, has nothing to do in a one-statement request.
    """
    book = book or load_phrasebook()
    primary: dict[str, Family | None] = {}
    forced = book.families[force] if force is not None else None
    for kind in ("frames", "words", "numbers", "noise"):
        candidates = book.of(kind, "train")
        options: list[Family | None] = list(candidates)
        weights = [f.weight for f in candidates]
        if kind in OPTIONAL_KINDS:
            options.append(None)
            weights.append(book.none_weight.get(kind, 0.0))
        drawn = rng.choices(options, weights=weights)[0] if options and sum(weights) > 0 else None
        primary[kind] = forced if forced is not None and forced.kind == kind else drawn
    renderer = _Renderer(book, rng, primary, program)
    text = renderer.program()
    return Rendering(text, tuple(sorted(renderer.used)))


def prose_style(book: PhraseBook | None = None) -> dict[str, Family | None]:
    """The families the manual writes requests with: full sentences, the operator table's words."""
    book = book or load_phrasebook()
    return {"frames": book.families["sentences"], "words": book.families["table"], "numbers": None, "noise": None}


def describe_expr(expr: Expr, rng: random.Random, parent: str | None = None) -> str:
    """One English rendering of ``expr`` in the operator table's words; ``rng`` picks among them."""
    return _Renderer(load_phrasebook(), rng, prose_style(), None).expr(expr, parent)


def describe_program(program: Program, rng: random.Random) -> str:
    """The request for ``program`` in full sentences and the operator table's words (the manual's style)."""
    return _Renderer(load_phrasebook(), rng, prose_style(), program).program()


class _Renderer:
    def __init__(self, book: PhraseBook, rng: random.Random, primary: dict[str, Family | None],
                 program: Program | None):
        self.book = book
        self.rng = rng
        self.primary = primary
        self.program_ = program
        self.used: set[str] = set()
        self.open_ended = False  # does the text just rendered end with an operation's argument?

    def chain(self, kind: str) -> list[Family]:
        family = self.primary.get(kind)
        return self.book.chain(family) if family is not None else []

    def frames(self, key: str, sub: str | None = None, ok=lambda _template: True) -> list[str]:
        """The phrasings for ``key`` (those ``ok`` accepts) of the first family that has any: the
        primary family, then what it falls back to. Records the family as used."""
        for family in self.chain("frames"):
            found = getattr(family, key)
            found = [t for t in (found.get(sub, ()) if sub is not None else found) if ok(t)]
            if found:
                self.used.add(family.id)
                return found
        raise ValueError(f"no phrasing for {key}{'.' + sub if sub else ''}")  # the phrase book's check rules this out

    def frames_setting(self, key: str):
        return next(getattr(f, key) for f in self.chain("frames") if getattr(f, key) is not None)

    # ---- whole requests ----------------------------------------------------------------------

    def program(self) -> str:
        statements = self.program_.statements
        named = len(statements) > 1  # only a lone statement may go unnamed: nothing refers to it
        texts = [self.statement(stmt, named) for stmt in statements]
        if len(texts) > 1:
            end = self.frames_setting("end")
            texts = [t if not end or t.endswith((end, "?")) else t + end for t in texts]
        if self.frames_setting("capitalize"):
            texts = [t if t.startswith(KEYWORD_STARTS) else t[:1].upper() + t[1:] for t in texts]
        text = self.rng.choice(self.frames("join")).join(texts) if len(texts) > 1 else texts[0]
        return self.noise(text)

    def statement(self, stmt, named: bool) -> str:
        if isinstance(stmt, Portfolio):
            return self.portfolio(stmt)
        templates = self.frames("signal" if isinstance(stmt, Signal) else "filter",
                                ok=lambda t: not named or "{name}" in t)
        template = self.rng.choice(templates)
        return template.format(name=stmt.name, desc=self.expr(stmt.expr))

    def portfolio(self, stmt: Portfolio) -> str:
        tile = TILES.get(stmt.top) if stmt.top is not None else None
        top_values = {}
        if stmt.top is not None:
            top_values = {"pct": format_number(round(stmt.top * 100, 6)), "frac": format_number(stmt.top)}
            if tile is not None:
                top_values["tile"] = tile
        direct = {"pct", "frac", "tile"}
        template = self.rng.choice(self.frames("portfolio", stmt.kind,
                                               ok=lambda t: not (_placeholders(t) & direct) - set(top_values)))
        names = _placeholders(template)
        values = {"signal": self.expr(stmt.signal), **top_values}
        values["opener"] = self.rng.choice(self.frames("openers")) if "opener" in names else ""
        values["where"] = ""
        if stmt.where is not None and "where" in names:
            values["where"] = self.rng.choice(self.frames("where")).format(x=self.expr(stmt.where))
        for key in ("top", "top_inline"):
            values[key] = ""
            if stmt.top is not None and key in names:
                clauses = self.frames(key, stmt.kind, ok=lambda t: _placeholders(t) <= set(top_values))
                values[key] = self.rng.choice(clauses).format(**top_values)
        return template.format(**values)

    # ---- expressions -------------------------------------------------------------------------

    def expr(self, expr: Expr, parent: str | None = None, threshold_units: str | None = "") -> str:
        self.open_ended = False
        if isinstance(expr, Num):
            return self.number(expr.value, threshold_units)
        if isinstance(expr, Ref):
            if expr.name not in FIELDS:
                return expr.name  # a signal or filter the program defined
            for family in self.chain("words"):
                if family.fields.get(expr.name):
                    self.used.add(family.id)
                    return self.rng.choice(family.fields[expr.name])
            return expr.name
        chain = self.chain("words")
        for i, family in enumerate(chain):
            last = i == len(chain) - 1
            idioms = [(idiom, b) for idiom in family.idioms if (b := _match(idiom.match, expr, {})) is not None]
            idioms = [(idiom, b, usable) for idiom, b in idioms
                      if (usable := [p for p in idiom.say if self.usable(p, expr, parent, b)])]
            if idioms and (family.idiom_rate >= 1 or self.rng.random() < family.idiom_rate):
                _, binding, phrases = self.rng.choice(idioms)
                self.used.add(family.id)
                return self.fill(self.rng.choice(phrases), binding, expr)
            phrases = family.operators.get(expr.op, ())
            usable = [p for p in phrases if self.usable(p, expr, parent)]
            if not usable and last:
                usable = [p for p in phrases if p.when is None]
            if usable:
                self.used.add(family.id)
                return self.call(expr, self.rng.choice(usable), parent)
        raise ValueError(f"no phrasing for operator '{expr.op}'")  # the phrase book's check rules this out

    def usable(self, phrase: Phrase, expr: Call, parent: str | None, binding: dict | None = None) -> bool:
        op = OPS[expr.op]
        if binding is None:
            series = [a for a, spec in zip(expr.args, op.args) if spec.kind in ("series", "mask")]
        else:
            series = [node for name, node in binding.items() if name not in WINDOW_PLACEHOLDERS]
        if phrase.when == "leaf" and not all(isinstance(a, Ref) and a.name in FIELDS for a in series):
            return False
        # Words after an argument ("{x} lagged {n}d") could belong to the parent or to the argument
        # once nested; a comparison keeps its sides apart, anything else does not. A closing
        # bracket after the argument ("not ({a})", "|{x}|") is not words.
        trailing = bool(_placeholders(phrase.text) - WINDOW_PLACEHOLDERS - {"k", "p"}) and bool(
            re.search(r"\w", phrase.text[phrase.text.rindex("}") + 1:] if "}" in phrase.text else phrase.text))
        if trailing and ((parent is not None and parent not in COMPARISONS) or any(isinstance(a, Call) for a in series)):
            return False
        return True

    def call(self, expr: Call, phrase: Phrase, parent: str | None) -> str:
        op = OPS[expr.op]
        values = {}
        threshold = None
        if expr.op in COMPARISONS:  # a number compared with something is a threshold in its units
            threshold = {i: units(other) for i, (arg, other) in enumerate(zip(expr.args, reversed(expr.args)))
                         if isinstance(arg, Num)}
        for i, (arg, spec) in enumerate(zip(expr.args, op.args)):
            if spec.kind == "window":
                values[spec.name] = str(int(arg.value))
            elif spec.kind != "group":
                context = threshold[i] if threshold and i in threshold else ""
                values[spec.name] = self.expr(arg, expr.op, context)
                if (i == 0 and self.open_ended and expr.op in _INFIX_ARITHMETIC
                        and phrase.text.startswith("{" + spec.name + "}")):
                    # "sign of hi - open" reads as sign(high - open): the left operand's own
                    # argument would run on into the arithmetic, so it gets brackets.
                    values[spec.name] = f"({values[spec.name]})"
        text = phrase.text.format(**values).replace(" 1 days", " 1 day")
        self.open_ended = _open_ended(phrase.text)
        if parent is not None and expr.op in _INFIX_ARITHMETIC:
            text = f"({text})"
            self.open_ended = False
        return text

    def fill(self, phrase: Phrase, binding: dict[str, Expr], expr: Call) -> str:
        values = {name: str(int(node.value)) if name in WINDOW_PLACEHOLDERS else self.expr(node, expr.op)
                  for name, node in binding.items()}
        self.open_ended = _open_ended(phrase.text)
        return phrase.text.format(**values)

    def number(self, value: float, threshold_units: str | None) -> str:
        """A literal; a threshold in a number family's units when one is drawn (``threshold_units``
        is the compared side's units, '' when the number is not a threshold)."""
        plain = format_number(value)
        family = self.primary.get("numbers")
        if family is None or threshold_units == "":
            return plain
        exact = Decimal(plain)
        options: list[tuple[str, Decimal]] = []
        if threshold_units == "return":
            options += [(t, exact * 10000) for t in family.bps] + [(t, exact * 100) for t in family.percent]
        elif abs(value) >= 1e6:
            options += [(t, exact / 10**6) for t in family.millions]
        elif abs(value) >= 1e3:
            options += [(t, exact / 10**3) for t in family.thousands]
        if not options:
            return plain
        template, scaled = self.rng.choice(options)
        self.used.add(family.id)
        return template.format(v=_decimal_text(scaled))

    # ---- noise -------------------------------------------------------------------------------

    def noise(self, text: str) -> str:
        family = self.primary.get("noise")
        if family is None:
            return text
        if family.typos:
            protected = self.names()
            # A typo never lands inside what shows a held-out family (its marker): a misspelt
            # `voluem 10d` would no longer be the postfix family the split promises.
            shown = [(m.start(), m.end()) for f in self.primary.values() if f is not None and f.role == "heldout"
                     for marker in f.markers for m in marker.finditer(text)]
            spots = [(m.start(), m.end(), word) for word in family.typos if word not in protected
                     for m in re.finditer(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text)
                     if not any(m.start() < end and start < m.end() for start, end in shown)]
            spots.sort()
            chosen = sorted(self.rng.sample(spots, min(family.typos_per_request, len(spots))), reverse=True)
            for start, end, word in chosen:
                text = text[:start] + self.rng.choice(family.typos[word]) + text[end:]
            if chosen:
                self.used.add(family.id)
        if family.edits:
            slipped = self.slips(text, family.edits)
            if slipped != text:
                text = slipped
                self.used.add(family.id)
        if family.casing == "lower":
            text = text.lower()
            self.used.add(family.id)
        return text

    def names(self) -> set[str]:
        """The program's signal and filter names: noise never touches them."""
        if self.program_ is None:
            return set()
        return {s.name for s in self.program_.statements if not isinstance(s, Portfolio)}

    def slips(self, text: str, count: int) -> str:
        """``text`` with up to ``count`` random one-letter slips (two neighbouring letters swapped,
        one dropped, one doubled) in words of four letters or more: never in a statement's name or a
        word that carries a number (``quintile``), nor where a slip would show a held-out family's
        marker (a training request must not). Character-level noise augmentation in the sense of
        EDA (Wei & Zou 2019)."""
        protected = self.names()
        drawn = {f.id for f in self.primary.values() if f is not None}
        heldout = [f for f in self.book.families.values() if f.role == "heldout" and f.id not in drawn]
        for _ in range(count):
            words = [m for m in re.finditer(r"[A-Za-z]{4,}", text) if m.group() not in protected
                     and not m.group().lower().startswith(tuple(NUMBER_WORDS))]
            for _attempt in range(8):
                if not words:
                    return text
                m = self.rng.choice(words)
                word, i = m.group(), self.rng.randrange(1, len(m.group()) - 1)
                how = self.rng.choice(("swap", "drop", "double"))
                slipped = (word[:i] + word[i + 1] + word[i] + word[i + 2:] if how == "swap"
                           else word[:i] + word[i + 1:] if how == "drop" else word[:i] + word[i] + word[i:])
                candidate = text[:m.start()] + slipped + text[m.end():]
                if slipped != word and not any(marker.search(candidate) for f in heldout for marker in f.markers):
                    text = candidate
                    break
        return text


def _placeholders(template: str) -> set[str]:
    return set(re.findall(r"\{(\w+)\}", template))


def _open_ended(template: str) -> bool:
    """Whether a phrasing ends on an operand ("sign of {x}"), which the next words could extend."""
    last = re.search(r"\{(\w+)\}$", template)
    return bool(last) and last.group(1) not in WINDOW_PLACEHOLDERS | {"k", "p", "v"}


def _decimal_text(value: Decimal) -> str:
    """'1.3', '200', '0.15': no exponent, no trailing zeros."""
    text = format(value.normalize(), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _match(pattern: Expr, expr: Expr, binding: dict[str, Expr]) -> dict[str, Expr] | None:
    """The placeholders of ``pattern`` bound to the parts of ``expr`` it matches, or None."""
    if isinstance(pattern, Ref) and pattern.name in IDIOM_PLACEHOLDERS and pattern.name not in FIELDS:
        if pattern.name in WINDOW_PLACEHOLDERS and not isinstance(expr, Num):
            return None
        if pattern.name in binding:
            return binding if binding[pattern.name] == expr else None
        return {**binding, pattern.name: expr}
    if isinstance(pattern, Ref):
        return binding if isinstance(expr, Ref) and expr.name == pattern.name else None
    if isinstance(pattern, Num):
        return binding if isinstance(expr, Num) and expr.value == pattern.value else None
    if not isinstance(expr, Call) or expr.op != pattern.op or len(expr.args) != len(pattern.args):
        return None
    for p, e in zip(pattern.args, expr.args):
        binding = _match(p, e, binding)
        if binding is None:
            return None
    return binding
