"""English for Quill: expressions and whole programs rendered as a researcher would ask for them.

Every operator carries several phrasings in the operator table; we draw one at random for each
node, so one program has many requests and a model must learn the meaning, not one sentence.
The phrasings stay unambiguous where it matters: an arithmetic operand that is itself
arithmetic is bracketed, and every number is written exactly as the program writes it.
"""

from __future__ import annotations

import random

from weightsmith.domains.quill.nodes import Call, Expr, Filter, Num, Portfolio, Program, Ref, Signal, format_number
from weightsmith.domains.quill.ops import FIELDS, OPS, PORTFOLIO_KINDS

_INFIX_ARITHMETIC = {"add", "sub", "mul", "div"}

SIGNAL_TEMPLATES = (
    "Define a signal {name} as {desc}.",
    "Create a signal called {name} equal to {desc}.",
    "Write a Quill signal named {name} that computes {desc}.",
    "I need a signal named {name}, computed as {desc}.",
    "Compute {desc} and call the signal {name}.",
    "signal {name}: {desc}",
    "Signal {name} should be {desc}.",
)
FILTER_TEMPLATES = (
    "Define a filter {name} that is true when {desc}.",
    "Create a filter called {name} that keeps assets where {desc}.",
    "Write a filter named {name}: {desc}.",
    "Filter {name} should select assets where {desc}.",
    "Keep only assets where {desc}, and name the filter {name}.",
    "filter {name}: true where {desc}",
)
WHERE_PHRASES = (", restricted to {where}", ", using only assets that pass {where}", ", within the {where} universe")
TOP_PHRASES = {
    "long_short": (", long the top {pct}% and short the bottom {pct}%", " with top={top}",
                   ", trading the top and bottom {pct}%"),
    "long_only": (", holding the top {pct}%", " with top={top}", ", buying the top {pct}%"),
}
PORTFOLIO_OPENERS = ("Then build {book}", "Finally, hold {book}", "Trade {book}", "Then run {book}")


def describe_expr(expr: Expr, rng: random.Random, parent: str | None = None) -> str:
    """One English rendering of ``expr``; ``rng`` picks among the phrasings."""
    if isinstance(expr, Num):
        return format_number(expr.value)
    if isinstance(expr, Ref):
        field = FIELDS.get(expr.name)
        return rng.choice(field.phrases) if field else expr.name
    op = OPS[expr.op]
    templates = op.phrases
    if parent is not None or any(isinstance(arg, Call) for arg in expr.args):
        # A phrasing with words after its argument ("{x} lagged by 5 days") is ambiguous once
        # nested: the trailing words could belong to the parent or to the argument. Inside
        # another operation, or around one, we only use phrasings that end on an argument.
        templates = [t for t in op.phrases if t.endswith("}")] or op.phrases
    template = rng.choice(templates)
    values = {}
    for arg, spec in zip(expr.args, op.args):
        if spec.kind == "window":
            values[spec.name] = str(int(arg.value))
        else:
            values[spec.name] = describe_expr(arg, rng, expr.op)
    text = template.format(**values).replace(" 1 days", " 1 day")
    if parent is not None and expr.op in _INFIX_ARITHMETIC:
        text = f"({text})"
    return text


def describe_statement(stmt, rng: random.Random) -> str:
    if isinstance(stmt, Signal):
        return rng.choice(SIGNAL_TEMPLATES).format(name=stmt.name, desc=describe_expr(stmt.expr, rng))
    if isinstance(stmt, Filter):
        return rng.choice(FILTER_TEMPLATES).format(name=stmt.name, desc=describe_expr(stmt.expr, rng))
    return describe_portfolio(stmt, rng)


def describe_portfolio(stmt: Portfolio, rng: random.Random) -> str:
    kind = PORTFOLIO_KINDS[stmt.kind]
    book = rng.choice(kind.phrases).format(signal=describe_expr(stmt.signal, rng))
    text = rng.choice(PORTFOLIO_OPENERS).format(book=book)
    if stmt.where is not None:
        text += rng.choice(WHERE_PHRASES).format(where=describe_expr(stmt.where, rng))
    if stmt.top is not None:
        pct = format_number(round(stmt.top * 100, 6))
        text += rng.choice(TOP_PHRASES[stmt.kind]).format(pct=pct, top=format_number(stmt.top))
    return text + "."


def describe_program(program: Program, rng: random.Random) -> str:
    """The request a user would type for ``program``: one sentence per statement."""
    sentences = [describe_statement(stmt, rng) for stmt in program.statements]
    if len(sentences) > 1:
        sentences = [s if s.endswith(".") else s + "." for s in sentences]
    return " ".join(_capitalize(s) for s in sentences)


def _capitalize(sentence: str) -> str:
    # "signal mom: ..." is a deliberate terse style; leave it lower-case.
    if sentence.startswith(("signal ", "filter ")):
        return sentence
    return sentence[:1].upper() + sentence[1:]
