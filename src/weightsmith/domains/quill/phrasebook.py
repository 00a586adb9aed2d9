"""The phrase book: every way a Quill request may be worded, read from a table (phrasebook.yaml).

A *family* is one way of wording part of a request — a set of statement frames, a vocabulary,
a number style, a kind of typo — with an id, a kind (frames | words | numbers | noise), a role
(train | heldout) and its phrasings. ``describe.render_request`` words a request with one family
of each kind; tasks.py keeps heldout families out of every training request, so the
held-out-phrasing eval measures wordings the model never saw.

Loading checks everything a renderer would otherwise trip on later, and says where: unknown
operators, fields or placeholders, a phrasing that drops an argument (the request could not be
solved), a fallback that is missing or held out, a held-out phrasing that shows none of its
family's markers, and a training phrasing that shows a held-out family's marker.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from weightsmith.domains.quill.nodes import Call, Expr, Ref
from weightsmith.domains.quill.ops import FIELDS, OPS, PORTFOLIO_KINDS
from weightsmith.errors import UserError, closest

KINDS = ("frames", "words", "numbers", "noise")
ROLES = ("train", "heldout")
OPTIONAL_KINDS = ("numbers", "noise")  # a request may draw none of these
TOP_KINDS = tuple(name for name, kind in PORTFOLIO_KINDS.items() if kind.uses_top)
WINDOW_PLACEHOLDERS = frozenset("n")
IDIOM_PLACEHOLDERS = frozenset("xyabnkp")  # one-letter names in an idiom's `match` stand for a part
CONDITIONS = ("leaf",)

# Which keys each kind of family may carry, besides the common ones.
COMMON_KEYS = ("id", "kind", "role", "weight", "about", "falls_back_to", "markers")
KIND_KEYS = {
    "frames": ("signal", "filter", "portfolio", "openers", "where", "top", "top_inline", "join", "end", "capitalize"),
    "words": ("operators", "fields", "idioms", "idiom_rate"),
    "numbers": ("millions", "thousands", "bps", "percent"),
    "noise": ("typos", "typos_per_request", "edits", "casing"),
}
CASINGS = ("lower",)

# Stand-ins for placeholders when a phrasing is checked against markers on its own.
SAMPLE_VALUES = {
    "x": "close", "y": "close", "a": "close", "b": "close", "cond": "close > open", "n": "10", "k": "2", "p": "2",
    "name": "mom", "desc": "close", "signal": "mom", "where": " in liquid", "top": ", top 20%",
    "top_inline": " top 20%", "opener": "Then build", "pct": "20", "frac": "0.2", "tile": "quintile", "v": "1.5",
}


@dataclass(frozen=True)
class Phrase:
    """One phrasing: a template, and when it may be used (``leaf``: every series argument is a field)."""

    text: str
    when: str | None = None

    @property
    def placeholders(self) -> frozenset[str]:
        return placeholders(self.text)


@dataclass(frozen=True)
class Idiom:
    """A phrase for a whole sub-expression: ``match`` (a pattern tree) is said as one of ``say``."""

    source: str
    match: Expr
    say: tuple[Phrase, ...]


@dataclass(frozen=True)
class Family:
    """One phrasing family; which fields are filled depends on ``kind`` (see phrasebook.yaml)."""

    id: str
    kind: str
    role: str
    weight: float = 0.0
    about: str = ""
    falls_back_to: str | None = None
    markers: tuple[re.Pattern, ...] = ()
    # frames
    signal: tuple[str, ...] = ()
    filter: tuple[str, ...] = ()
    portfolio: dict[str, tuple[str, ...]] = field(default_factory=dict)
    openers: tuple[str, ...] = ()
    where: tuple[str, ...] = ()
    top: dict[str, tuple[str, ...]] = field(default_factory=dict)
    top_inline: dict[str, tuple[str, ...]] = field(default_factory=dict)
    join: tuple[str, ...] = ()
    end: str | None = None
    capitalize: bool | None = None
    # words
    operators: dict[str, tuple[Phrase, ...]] = field(default_factory=dict)
    fields: dict[str, tuple[str, ...]] = field(default_factory=dict)
    idioms: tuple[Idiom, ...] = ()
    idiom_rate: float = 1.0
    # numbers
    millions: tuple[str, ...] = ()
    thousands: tuple[str, ...] = ()
    bps: tuple[str, ...] = ()
    percent: tuple[str, ...] = ()
    # noise
    typos: dict[str, tuple[str, ...]] = field(default_factory=dict)
    typos_per_request: int = 1
    edits: int = 0  # random one-letter slips a request (swap, drop or double a letter)
    casing: str | None = None

    def phrasings(self) -> list[tuple[str, str]]:
        """(where in the table, template) for every phrasing the family itself holds."""
        out: list[tuple[str, str]] = []
        for key in ("signal", "filter", "openers", "where", "join", "millions", "thousands", "bps", "percent"):
            out += [(f"{key}[{i}]", t) for i, t in enumerate(getattr(self, key))]
        for key in ("portfolio", "top", "top_inline"):
            for kind, templates in getattr(self, key).items():
                out += [(f"{key}.{kind}[{i}]", t) for i, t in enumerate(templates)]
        for op, phrases in self.operators.items():
            out += [(f"operators.{op}[{i}]", p.text) for i, p in enumerate(phrases)]
        for name, phrases in self.fields.items():
            out += [(f"fields.{name}[{i}]", p) for i, p in enumerate(phrases)]
        for i, idiom in enumerate(self.idioms):
            out += [(f"idioms[{i}].say[{j}]", p.text) for j, p in enumerate(idiom.say)]
        for word, wrong in self.typos.items():
            out += [(f"typos.{word}[{i}]", t) for i, t in enumerate(wrong)]
        return out


@dataclass(frozen=True)
class PhraseBook:
    """The families, by id, and how often a request draws none of an optional kind."""

    families: dict[str, Family]
    none_weight: dict[str, float]
    source: str  # the file it was read from, for messages and provenance
    sha256: str

    def of(self, kind: str, role: str) -> list[Family]:
        return [f for f in self.families.values() if f.kind == kind and f.role == role]

    @property
    def train_ids(self) -> frozenset[str]:
        return frozenset(f.id for f in self.families.values() if f.role == "train")

    @property
    def heldout_ids(self) -> frozenset[str]:
        return frozenset(f.id for f in self.families.values() if f.role == "heldout")

    def chain(self, family: Family) -> list[Family]:
        """``family`` and the families it falls back to, in order."""
        out = [family]
        while out[-1].falls_back_to is not None:
            out.append(self.families[out[-1].falls_back_to])
        return out

    def leaks(self, text: str) -> list[tuple[str, str]]:
        """(held-out family id, marker) for every held-out marker ``text`` shows."""
        return [(f.id, m.pattern) for f in self.families.values() if f.role == "heldout"
                for m in f.markers if m.search(text)]


def placeholders(template: str) -> frozenset[str]:
    """The ``{name}`` placeholders of a template."""
    return frozenset(name for _, name, _, _ in string.Formatter().parse(template) if name is not None)


SHIPPED = Path(__file__).with_name("phrasebook.yaml")


@lru_cache(maxsize=8)
def _load_cached(path: str, _version: tuple) -> PhraseBook:
    import hashlib

    from weightsmith.yamlfile import load_yaml_mapping

    file = Path(path)
    raw = load_yaml_mapping(file, "phrase book", "'families'")
    return _build(raw, str(file), hashlib.sha256(file.read_bytes()).hexdigest())


def load_phrasebook(path: str | Path | None = None) -> PhraseBook:
    """Read and check a phrase book; ``None`` is the shipped one (``phrasebook.yaml`` beside this module).

    Raises:
        UserError: one sentence naming the file, the family and the key that is wrong.
    """
    file = SHIPPED if path is None else Path(path).resolve()
    try:
        stat = file.stat()
        version = (stat.st_mtime_ns, stat.st_size)  # an edited file is read again
    except OSError:
        version = ()  # load_yaml_mapping says the file does not exist
    return _load_cached(str(file), version)


# ---- checking ------------------------------------------------------------------------------------


def _build(raw: dict, source: str, sha256: str) -> PhraseBook:
    def fail(where: str, problem: str) -> UserError:
        return UserError(f"{source}: {where}: {problem}.")

    unknown = set(raw) - {"draw", "families"}
    if unknown:
        key = sorted(unknown)[0]
        raise fail(key, f"unknown key{closest(key, ('draw', 'families'))}; a phrase book has 'draw' and 'families'")
    entries = raw.get("families")
    if not isinstance(entries, list) or not entries:
        raise fail("families", "must be a list of families (id, kind, role, phrasings)")
    families: dict[str, Family] = {}
    for i, entry in enumerate(entries):
        family = _family(entry, f"families[{i}]", fail)
        if family.id in families:
            raise fail(f"families[{i}].id", f"'{family.id}' is used twice; give each family its own id")
        families[family.id] = family

    none_weight = {}
    draw = raw.get("draw") or {}
    if not isinstance(draw, dict):
        raise fail("draw", "must map an optional kind (numbers, noise) to {none: WEIGHT}")
    for kind, spec in draw.items():
        if kind not in OPTIONAL_KINDS:
            raise fail(f"draw.{kind}", f"only {' and '.join(OPTIONAL_KINDS)} may be left out of a request")
        if not isinstance(spec, dict) or set(spec) != {"none"} or not _number(spec["none"]) or spec["none"] < 0:
            raise fail(f"draw.{kind}", "must be {none: WEIGHT} with a weight of 0 or more")
        none_weight[kind] = float(spec["none"])

    book = PhraseBook(families, none_weight, source, sha256)
    _check_fallbacks(book, fail)
    _check_coverage(book, fail)
    _check_markers(book, fail)
    return book


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _strings(value: Any, where: str, fail, allow_empty: bool = False) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or (not value and not allow_empty) or not all(isinstance(v, str) for v in value):
        raise fail(where, "must be a list of strings (quote templates with braces: \"{n}d vol\")")
    return tuple(value)


def _template(text: str, where: str, fail, allowed: frozenset[str], required: frozenset[str] = frozenset(),
              one_of: frozenset[str] = frozenset()) -> str:
    try:
        names = placeholders(text)
    except ValueError as exc:  # a lone brace
        raise fail(where, f"'{text}' is not a template ({exc}); write a literal brace as {{{{ or }}}}") from exc
    extra = names - allowed
    if extra:
        raise fail(where, f"'{text}' uses {{{sorted(extra)[0]}}}, which is not a placeholder here; "
                          f"use {', '.join('{' + n + '}' for n in sorted(allowed))}")
    missing = required - names
    if missing:
        raise fail(where, f"'{text}' leaves out {{{sorted(missing)[0]}}}, so the request would not say it")
    if one_of and not names & one_of:
        raise fail(where, f"'{text}' must use one of {', '.join('{' + n + '}' for n in sorted(one_of))}")
    return text


def _family(entry: Any, where: str, fail) -> Family:
    if not isinstance(entry, dict):
        raise fail(where, "must be a mapping with id, kind, role and phrasings")
    fid = entry.get("id")
    if not isinstance(fid, str) or not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", fid or ""):
        raise fail(f"{where}.id", "must be a short lower-case name like 'desk' or 'call-it'")
    where = f"{where} ('{fid}')"
    kind, role = entry.get("kind"), entry.get("role")
    if kind not in KINDS:
        raise fail(f"{where}.kind", f"must be one of {', '.join(KINDS)}{closest(str(kind), KINDS)}")
    if role not in ROLES:
        raise fail(f"{where}.role", f"must be train or heldout{closest(str(role), ROLES)}")
    allowed = COMMON_KEYS + KIND_KEYS[kind]
    for key in entry:
        if key not in allowed:
            other = next((k for k, keys in KIND_KEYS.items() if key in keys), None)
            hint = f" (it belongs to a {other} family)" if other else closest(str(key), allowed)
            raise fail(f"{where}.{key}", f"is not a key of a {kind} family{hint}")
    weight = entry.get("weight", 0.0 if role == "heldout" else None)
    if not _number(weight) or weight < 0 or (role == "train" and weight <= 0):
        raise fail(f"{where}.weight", "a train family needs a weight above 0 (how often a request draws it)")
    markers = []
    for i, pattern in enumerate(_strings(entry.get("markers", []), f"{where}.markers", fail, allow_empty=True)):
        try:
            markers.append(re.compile(pattern, re.IGNORECASE))
        except re.error as exc:
            raise fail(f"{where}.markers[{i}]", f"'{pattern}' is not a regular expression ({exc})") from exc
    if kind == "noise" and role == "heldout":  # a misspelling is its own marker
        typos = entry.get("typos") or {}
        markers += [re.compile(rf"\b{re.escape(w)}\b", re.IGNORECASE)
                    for wrong in typos.values() if isinstance(wrong, list) for w in wrong if isinstance(w, str)]
    if role == "heldout" and not markers:
        raise fail(f"{where}.markers", "a heldout family needs markers: patterns that tell its phrasings apart")
    fb = entry.get("falls_back_to")
    if fb is not None and not isinstance(fb, str):
        raise fail(f"{where}.falls_back_to", "must be the id of a train family of the same kind")
    common = dict(id=fid, kind=kind, role=role, weight=float(weight), about=str(entry.get("about", "")),
                  falls_back_to=fb, markers=tuple(markers))
    return Family(**common, **_KIND_READERS[kind](entry, where, fail))


def _frames(entry: dict, where: str, fail) -> dict:
    out: dict[str, Any] = {}
    for key in ("signal", "filter"):
        if key in entry:
            out[key] = tuple(_template(t, f"{where}.{key}[{i}]", fail, frozenset({"name", "desc"}), frozenset({"desc"}))
                             for i, t in enumerate(_strings(entry[key], f"{where}.{key}", fail)))
    if "portfolio" in entry:
        out["portfolio"] = {}
        for kind, templates in _kinds(entry["portfolio"], f"{where}.portfolio", fail, tuple(PORTFOLIO_KINDS)).items():
            uses_top = PORTFOLIO_KINDS[kind].uses_top
            allowed = {"signal", "where", "opener"} | ({"top", "top_inline", "pct", "frac", "tile"} if uses_top else set())
            out["portfolio"][kind] = tuple(
                _template(t, f"{where}.portfolio.{kind}[{i}]", fail, frozenset(allowed), frozenset({"signal", "where"}),
                          frozenset({"top", "top_inline", "pct", "frac", "tile"}) if uses_top else frozenset())
                for i, t in enumerate(_strings(templates, f"{where}.portfolio.{kind}", fail)))
    for key in ("openers", "join"):
        if key in entry:
            out[key] = tuple(_template(t, f"{where}.{key}[{i}]", fail, frozenset())
                             for i, t in enumerate(_strings(entry[key], f"{where}.{key}", fail)))
    if "where" in entry:
        out["where"] = tuple(_template(t, f"{where}.where[{i}]", fail, frozenset({"x"}), frozenset({"x"}))
                             for i, t in enumerate(_strings(entry["where"], f"{where}.where", fail)))
    for key in ("top", "top_inline"):
        if key in entry:
            out[key] = {kind: tuple(_template(t, f"{where}.{key}.{kind}[{i}]", fail, frozenset({"pct", "frac", "tile"}),
                                              one_of=frozenset({"pct", "frac", "tile"}))
                                    for i, t in enumerate(_strings(templates, f"{where}.{key}.{kind}", fail)))
                        for kind, templates in _kinds(entry[key], f"{where}.{key}", fail, TOP_KINDS).items()}
    if "end" in entry:
        if not isinstance(entry["end"], str):
            raise fail(f"{where}.end", "must be the text that ends each statement of a longer request, e.g. \".\"")
        out["end"] = entry["end"]
    if "capitalize" in entry:
        if not isinstance(entry["capitalize"], bool):
            raise fail(f"{where}.capitalize", "must be true or false")
        out["capitalize"] = entry["capitalize"]
    return out


def _kinds(value: Any, where: str, fail, kinds: tuple[str, ...]) -> dict:
    if not isinstance(value, dict):
        raise fail(where, f"must map portfolio kinds ({', '.join(kinds)}) to lists of templates")
    for kind in value:
        if kind not in kinds:
            raise fail(f"{where}.{kind}", f"is not one of {', '.join(kinds)}{closest(str(kind), kinds)}")
    return value


def _phrase(value: Any, where: str, fail, allowed: frozenset[str], required: frozenset[str]) -> Phrase:
    when = None
    if isinstance(value, dict):
        if set(value) - {"say", "when"} or "say" not in value:
            raise fail(where, "must be a template or {say: TEMPLATE, when: leaf}")
        value, when = value["say"], value.get("when")
        if when not in CONDITIONS:
            raise fail(f"{where}.when", f"must be one of {', '.join(CONDITIONS)}")
    if not isinstance(value, str):
        raise fail(where, "must be a template string")
    return Phrase(_template(value, where, fail, allowed, required), when)


def _words(entry: dict, where: str, fail) -> dict:
    out: dict[str, Any] = {}
    operators = entry.get("operators")
    if operators == "table":  # the operator table's own phrasings (ops.py)
        out["operators"] = {name: tuple(Phrase(t) for t in op.phrases) for name, op in OPS.items()}
    elif operators is not None:
        if not isinstance(operators, dict):
            raise fail(f"{where}.operators", "must map operator names to phrasings, or be 'table'")
        out["operators"] = {}
        for name, phrases in operators.items():
            if name not in OPS:
                raise fail(f"{where}.operators.{name}", f"is not a Quill operator{closest(str(name), OPS)}")
            args = frozenset(a.name for a in OPS[name].args if a.kind != "group")
            if not isinstance(phrases, list) or not phrases:
                raise fail(f"{where}.operators.{name}", "must be a list of phrasings")
            out["operators"][name] = tuple(_phrase(p, f"{where}.operators.{name}[{i}]", fail, args, args)
                                           for i, p in enumerate(phrases))
    fields_ = entry.get("fields")
    if fields_ == "table":
        out["fields"] = {name: spec.phrases for name, spec in FIELDS.items()}
    elif fields_ is not None:
        if not isinstance(fields_, dict):
            raise fail(f"{where}.fields", "must map field names to phrasings, or be 'table'")
        for name in fields_:
            if name not in FIELDS:
                raise fail(f"{where}.fields.{name}", f"is not a Quill field{closest(str(name), FIELDS)}")
        out["fields"] = {name: tuple(_template(t, f"{where}.fields.{name}[{i}]", fail, frozenset())
                                     for i, t in enumerate(_strings(p, f"{where}.fields.{name}", fail)))
                         for name, p in fields_.items()}
    if "idioms" in entry:
        if not isinstance(entry["idioms"], list):
            raise fail(f"{where}.idioms", "must be a list of {match: EXPRESSION, say: [TEMPLATES]}")
        out["idioms"] = tuple(_idiom(item, f"{where}.idioms[{i}]", fail) for i, item in enumerate(entry["idioms"]))
    if "idiom_rate" in entry:
        rate = entry["idiom_rate"]
        if not _number(rate) or not 0 <= rate <= 1:
            raise fail(f"{where}.idiom_rate", "must be a probability between 0 and 1")
        out["idiom_rate"] = float(rate)
    return out


def _idiom(item: Any, where: str, fail) -> Idiom:
    from weightsmith.domains.quill.errors import QuillSyntaxError
    from weightsmith.domains.quill.parser import _Parser

    if not isinstance(item, dict) or set(item) != {"match", "say"} or not isinstance(item["match"], str):
        raise fail(where, "must be {match: EXPRESSION, say: [TEMPLATES]}")
    try:
        parser = _Parser(item["match"])
        pattern = parser.expr()
        if parser.peek().kind not in ("newline", "eof"):
            raise parser.error(f"expected the end of the expression, found {parser.peek().describe()}")
    except QuillSyntaxError as exc:
        raise fail(f"{where}.match", f"'{item['match']}' is not a Quill expression ({exc.message})") from exc
    names = set()
    for node in _nodes(pattern):
        if isinstance(node, Call) and (node.op not in OPS or len(node.args) != OPS[node.op].arity):
            raise fail(f"{where}.match", f"'{item['match']}': '{node.op}' is not a Quill operator with "
                                         f"{len(node.args)} argument(s)")
        if isinstance(node, Ref) and node.name not in FIELDS:
            if node.name not in IDIOM_PLACEHOLDERS:
                raise fail(f"{where}.match", f"'{node.name}' is neither a field nor a placeholder "
                                             f"({', '.join(sorted(IDIOM_PLACEHOLDERS))})")
            names.add(node.name)
    if not isinstance(pattern, Call):
        raise fail(f"{where}.match", "must be an operation, not a single name or number")
    say = _strings(item["say"], f"{where}.say", fail)
    return Idiom(item["match"], pattern, tuple(
        Phrase(_template(t, f"{where}.say[{i}]", fail, frozenset(names), frozenset(names))) for i, t in enumerate(say)))


def _nodes(expr: Expr):
    yield expr
    if isinstance(expr, Call):
        for arg in expr.args:
            yield from _nodes(arg)


def _numbers(entry: dict, where: str, fail) -> dict:
    return {key: tuple(_template(t, f"{where}.{key}[{i}]", fail, frozenset({"v"}), frozenset({"v"}))
                       for i, t in enumerate(_strings(entry[key], f"{where}.{key}", fail)))
            for key in KIND_KEYS["numbers"] if key in entry}


def _noise(entry: dict, where: str, fail) -> dict:
    out: dict[str, Any] = {}
    if "typos" in entry:
        typos = entry["typos"]
        if not isinstance(typos, dict) or not typos:
            raise fail(f"{where}.typos", "must map a word to its misspellings")
        out["typos"] = {}
        for word, wrong in typos.items():
            wrong = _strings(wrong, f"{where}.typos.{word}", fail)
            if not isinstance(word, str) or any(w == word or not w.strip() for w in wrong):
                raise fail(f"{where}.typos.{word}", "each misspelling must differ from the word")
            out["typos"][word] = wrong
    if "typos_per_request" in entry:
        n = entry["typos_per_request"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise fail(f"{where}.typos_per_request", "must be a whole number of at least 1")
        out["typos_per_request"] = n
    if "edits" in entry:
        n = entry["edits"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise fail(f"{where}.edits", "must be a whole number of at least 1 (random slips a request)")
        out["edits"] = n
    if "casing" in entry:
        if entry["casing"] not in CASINGS:
            raise fail(f"{where}.casing", f"must be one of {', '.join(CASINGS)}")
        out["casing"] = entry["casing"]
    return out


_KIND_READERS = {"frames": _frames, "words": _words, "numbers": _numbers, "noise": _noise}


def _check_fallbacks(book: PhraseBook, fail) -> None:
    for family in book.families.values():
        seen = {family.id}
        current = family
        while current.falls_back_to is not None:
            target = book.families.get(current.falls_back_to)
            where = f"family '{current.id}'.falls_back_to"
            if target is None:
                raise fail(where, f"'{current.falls_back_to}' is not a family{closest(current.falls_back_to, book.families)}")
            if target.kind != current.kind or target.role != "train":
                raise fail(where, f"'{target.id}' must be a train family of kind {current.kind} "
                                  f"(it is a {target.role} {target.kind} family)")
            if target.id in seen:
                raise fail(where, f"falling back from '{family.id}' comes back to '{target.id}'; break the circle")
            seen.add(target.id)
            current = target


def _check_coverage(book: PhraseBook, fail) -> None:
    """Every train family of frames and words must be able to word every statement and operator."""
    for kind in ("frames", "words"):
        if not book.of(kind, "train"):
            raise fail("families", f"there is no train family of kind {kind}; a request needs one")
    for family in book.families.values():
        chain = book.chain(family)
        missing = []
        if family.kind == "frames":
            for key in ("signal", "filter", "where", "join"):
                if not any(getattr(f, key) for f in chain):
                    missing.append(key)
            for key, kinds in (("portfolio", tuple(PORTFOLIO_KINDS)), ("top", TOP_KINDS)):
                missing += [f"{key}.{k}" for k in kinds if not any(getattr(f, key).get(k) for f in chain)]
            if not any(f.end is not None for f in chain) or not any(f.capitalize is not None for f in chain):
                missing.append("end" if not any(f.end is not None for f in chain) else "capitalize")
            needs_openers = any("{opener}" in t for f in chain for ts in f.portfolio.values() for t in ts)
            if needs_openers and not any(f.openers for f in chain):
                missing.append("openers")
        elif family.kind == "words":
            missing += [f"operators.{op}" for op in OPS
                        if not any(p.when is None for f in chain for p in f.operators.get(op, ()))]
            missing += [f"fields.{name}" for name in FIELDS if not any(f.fields.get(name) for f in chain)]
        if missing:
            raise fail(f"family '{family.id}'", f"nothing (in it or what it falls back to) words "
                                                f"{', '.join(missing[:4])}; add it or fall back to a family that has it")


def _check_markers(book: PhraseBook, fail) -> None:
    """Held-out phrasings must show their family's markers; training phrasings no held-out marker."""
    for family in book.families.values():
        for where, template in family.phrasings():
            sample = template if family.kind == "noise" else _sample(template)
            if family.role == "heldout":
                if not any(m.search(sample) for m in family.markers):
                    raise fail(f"family '{family.id}'.{where}", f"'{template}' shows none of the family's markers "
                                                                "(every held-out phrasing must be recognisable)")
            else:
                for other, marker in book.leaks(sample):
                    raise fail(f"family '{family.id}'.{where}", f"the training phrasing '{template}' shows the marker "
                                                                f"'{marker}' of held-out family '{other}'")


def _sample(template: str) -> str:
    return template.format(**{name: SAMPLE_VALUES.get(name, name) for name in placeholders(template)})
