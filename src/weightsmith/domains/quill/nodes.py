"""The Quill syntax tree, and the canonical printer that turns a tree back into source.

Positions (``line``, ``col``) are excluded from equality, so two programs that differ only in
spacing compare equal, and ``parse(format_program(p)) == p``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union


@dataclass(frozen=True)
class Num:
    value: float
    text: str = field(default="", compare=False)  # as written; windows must be integer literals
    line: int = field(default=0, compare=False)
    col: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Ref:
    """A field (close, volume, sector, ...) or a signal/filter defined earlier."""

    name: str
    line: int = field(default=0, compare=False)
    col: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Call:
    """An operator applied to arguments; infix operators (+, >, and, ...) are Calls too."""

    op: str
    args: tuple["Expr", ...]
    line: int = field(default=0, compare=False)
    col: int = field(default=0, compare=False)


Expr = Union[Num, Ref, Call]


@dataclass(frozen=True)
class Signal:
    name: str
    expr: Expr
    line: int = field(default=0, compare=False)
    col: int = field(default=0, compare=False)
    name_col: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Filter:
    name: str
    expr: Expr
    line: int = field(default=0, compare=False)
    col: int = field(default=0, compare=False)
    name_col: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Portfolio:
    """``portfolio KIND(signal, where=mask, top=fraction)``; ``where`` and ``top`` optional."""

    kind: str
    signal: Expr
    where: Expr | None = None
    top: float | None = None
    line: int = field(default=0, compare=False)
    col: int = field(default=0, compare=False)


Statement = Union[Signal, Filter, Portfolio]

PORTFOLIO_OUTPUT = "portfolio"
PNL_OUTPUT = "pnl"


@dataclass(frozen=True)
class Program:
    statements: tuple[Statement, ...]

    @property
    def result_name(self) -> str:
        """The output that *is* the program's answer: the portfolio, else the last statement."""
        last = self.statements[-1]
        return PORTFOLIO_OUTPUT if isinstance(last, Portfolio) else last.name

    def __str__(self) -> str:
        return format_program(self)


# ---- printing -------------------------------------------------------------------------------

# Binding strength of the infix forms; a call or atom binds tightest.
INFIX = {
    "or": ("or", 1), "and": ("and", 2),
    "eq": ("==", 4), "ne": ("!=", 4), "lt": ("<", 4), "le": ("<=", 4), "gt": (">", 4), "ge": (">=", 4),
    "add": ("+", 5), "sub": ("-", 5), "mul": ("*", 6), "div": ("/", 6),
}
PREFIX = {"not": ("not ", 3), "neg": ("-", 7)}
ATOM = 9


def format_number(value: float) -> str:
    """Canonical literal text: '5', '0.2', '1.5e6', '-3'; always reads back as the same float."""
    if value == int(value) and abs(value) < 1e5:
        return str(int(value))
    text = f"{value:.6g}"
    if float(text) != value:
        text = repr(float(value))
    mantissa, _, exponent = text.partition("e")
    if exponent:
        text = f"{mantissa}e{int(exponent)}"
    return text


def precedence(expr: Expr) -> int:
    if isinstance(expr, Call):
        if expr.op in INFIX:
            return INFIX[expr.op][1]
        if expr.op in PREFIX:
            return PREFIX[expr.op][1]
    if isinstance(expr, Num) and expr.value < 0:
        return PREFIX["neg"][1]
    return ATOM


def format_expr(expr: Expr) -> str:
    if isinstance(expr, Num):
        return format_number(expr.value)
    if isinstance(expr, Ref):
        return expr.name
    if expr.op in INFIX:
        symbol, prec = INFIX[expr.op]
        left, right = expr.args
        # Comparisons do not chain, so both sides of one need parentheses at equal strength;
        # the other infix forms associate to the left.
        left_min = prec + 1 if prec == 4 else prec
        return f"{_wrap(left, left_min)} {symbol} {_wrap(right, prec + 1)}"
    if expr.op in PREFIX:
        symbol, prec = PREFIX[expr.op]
        return f"{symbol}{_wrap(expr.args[0], prec)}"
    return f"{expr.op}({', '.join(format_expr(a) for a in expr.args)})"


def _wrap(expr: Expr, min_prec: int) -> str:
    text = format_expr(expr)
    return f"({text})" if precedence(expr) < min_prec else text


def format_statement(stmt: Statement) -> str:
    if isinstance(stmt, Signal):
        return f"signal {stmt.name} = {format_expr(stmt.expr)}"
    if isinstance(stmt, Filter):
        return f"filter {stmt.name} = {format_expr(stmt.expr)}"
    parts = [format_expr(stmt.signal)]
    if stmt.where is not None:
        parts.append(f"where={format_expr(stmt.where)}")
    if stmt.top is not None:
        parts.append(f"top={format_number(stmt.top)}")
    return f"portfolio {stmt.kind}({', '.join(parts)})"


def format_program(program: Program) -> str:
    """The canonical source of ``program``: one statement per line, minimal parentheses."""
    return "\n".join(format_statement(s) for s in program.statements)


# ---- walking ----------------------------------------------------------------------------------


def subexpressions(expr: Expr):
    """Every node of ``expr``, parents before children."""
    yield expr
    if isinstance(expr, Call):
        for arg in expr.args:
            yield from subexpressions(arg)


def statement_exprs(stmt: Statement) -> list[Expr]:
    if isinstance(stmt, Portfolio):
        return [e for e in (stmt.signal, stmt.where) if e is not None]
    return [stmt.expr]


def depth(expr: Expr) -> int:
    """Nesting depth in operator applications: ``close`` is 0, ``rank(delta(close, 5))`` is 2."""
    if isinstance(expr, Call):
        return 1 + max((depth(a) for a in expr.args), default=0)
    return 0
