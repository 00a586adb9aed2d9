"""Static checks on a parsed Quill program: names, arity, argument kinds, windows.

Every error names the line and column of the offending piece and says what to write instead,
because the reader is as often a small model being trained as a person.
"""

from __future__ import annotations

import re

from weightsmith.domains.quill.errors import QuillSyntaxError
from weightsmith.domains.quill.nodes import Expr, Filter, Num, Portfolio, Program, Ref, Signal, format_expr
from weightsmith.domains.quill.ops import CALLABLE_OPS, FIELDS, OPS, RESERVED_NAMES, Arg, Op
from weightsmith.errors import closest

_INTEGER = re.compile(r"\d+")
GROUP_OPS = ", ".join(name for name, op in OPS.items() if any(a.kind == "group" for a in op.args))


def check_program(program: Program, source: str = "") -> None:
    """Raise QuillSyntaxError at the first problem, or return None for a well-typed program."""
    checker = _Checker(source)
    last = len(program.statements) - 1
    for index, stmt in enumerate(program.statements):
        if isinstance(stmt, Portfolio):
            if index != last:
                raise checker.error("the portfolio must be the last statement of the program", stmt, "type")
            checker.expect(stmt.signal, "series", "the signal of the portfolio")
            if stmt.where is not None:
                checker.expect(stmt.where, "mask", "where=")
            continue
        checker.define(stmt)


def expression_kind(expr: Expr, source: str, names: dict[str, str]) -> str:
    """The kind of one expression ('series', 'mask', 'group' or 'number'), or raise."""
    checker = _Checker(source)
    checker.names.update({name: (kind, 0) for name, kind in names.items()})
    return checker.kind_of(expr)


class _Checker:
    def __init__(self, source: str):
        self.source = source
        self.names: dict[str, tuple[str, int]] = {}  # name -> (kind, line defined)

    def error(self, message: str, node, kind: str) -> QuillSyntaxError:
        return QuillSyntaxError(message, node.line, node.col, self.source, kind)

    def define(self, stmt: Signal | Filter) -> None:
        where = _At(stmt.line, stmt.name_col)
        word = "signal" if isinstance(stmt, Signal) else "filter"
        if stmt.name in RESERVED_NAMES:
            raise self.error(f"'{stmt.name}' is a reserved word of Quill; choose another {word} name", where, "name")
        if stmt.name in self.names:
            raise self.error(f"'{stmt.name}' is already defined on line {self.names[stmt.name][1]}; "
                             "choose a new name", where, "name")
        kind = "series" if isinstance(stmt, Signal) else "mask"
        self.expect(stmt.expr, kind, f"{word} '{stmt.name}'")
        self.names[stmt.name] = (kind, stmt.line)

    def expect(self, expr: Expr, want: str, what: str) -> None:
        got = self.kind_of(expr)
        if want == "series" and got in ("series", "number"):
            return
        if want == got:
            return
        text = format_expr(expr)
        if got == "group":
            raise self.error(f"'{text}' is a group label; it can only be the group argument of {GROUP_OPS}",
                             expr, "type")
        if want == "series":
            raise self.error(f"{what} must be a numeric series, but '{text}' is a condition "
                             "(use a filter, or if_else(cond, 1, 0) for a number)", expr, "type")
        raise self.error(f"{what} must be a condition such as 'close > open', but '{text}' is a numeric series",
                         expr, "type")

    def kind_of(self, expr: Expr) -> str:
        if isinstance(expr, Num):
            return "number"
        if isinstance(expr, Ref):
            return self.kind_of_name(expr)
        op = OPS.get(expr.op)
        if op is None:
            raise self.error(self.unknown_operator(expr.op), expr, "name")
        if len(expr.args) != op.arity:
            plural = "argument" if op.arity == 1 else "arguments"
            raise self.error(f"'{op.name}' takes {op.arity} {plural} ({', '.join(a.name for a in op.args)}) "
                             f"but got {len(expr.args)}", expr, "arity")
        for arg, spec in zip(expr.args, op.args):
            self.check_argument(op, spec, arg)
        return op.returns

    def kind_of_name(self, ref: Ref) -> str:
        if ref.name in FIELDS:
            return FIELDS[ref.name].kind
        if ref.name in self.names:
            return self.names[ref.name][0]
        if ref.name in CALLABLE_OPS:
            raise self.error(f"'{ref.name}' is an operator; call it as {CALLABLE_OPS[ref.name].signature}",
                             ref, "name")
        known = list(self.names) + list(FIELDS)
        raise self.error(f"undefined name '{ref.name}'{closest(ref.name, known)}; use a field "
                         f"({', '.join(FIELDS)}) or define it on an earlier line with "
                         f"'signal {ref.name} = ...'", ref, "name")

    def unknown_operator(self, name: str) -> str:
        if name in FIELDS or name in self.names:
            return f"'{name}' is a {'field' if name in FIELDS else 'defined name'}, not an operator; drop the '('"
        return f"unknown operator '{name}'{closest(name, CALLABLE_OPS)}"

    def check_argument(self, op: Op, spec: Arg, arg: Expr) -> None:
        label = _argument_label(op, spec)
        if spec.kind in ("series", "mask"):
            self.expect(arg, spec.kind, label)
        elif spec.kind == "window":
            ok = isinstance(arg, Num) and _INTEGER.fullmatch(arg.text or "") and arg.value >= 1
            if not ok:
                raise self.error(f"the window {spec.name} of '{op.name}' must be a positive integer literal "
                                 f"such as 5, got '{format_expr(arg)}'", arg, "window")
            if arg.value < op.min_window:
                raise self.error(f"the window of '{op.name}' must be at least {op.min_window}, got "
                                 f"{int(arg.value)}", arg, "window")
        elif spec.kind == "scalar":
            if not isinstance(arg, Num):
                raise self.error(f"{label} must be a number literal such as {spec.choices[0]}, "
                                 f"got '{format_expr(arg)}'", arg, "type")
            if spec.positive and arg.value <= 0:
                raise self.error(f"{label} must be positive, got {format_expr(arg)}", arg, "type")
        elif spec.kind == "group":
            if not (isinstance(arg, Ref) and arg.name in FIELDS and FIELDS[arg.name].kind == "group"):
                raise self.error(f"{label} must be a group label: sector, got '{format_expr(arg)}'", arg, "type")


class _At:
    """A position for an error that points at a name rather than at a node."""

    def __init__(self, line: int, col: int):
        self.line, self.col = line, col


def _argument_label(op: Op, spec: Arg) -> str:
    if op.symbol and op.arity == 2:
        side = "left" if spec is op.args[0] else "right"
        return f"the {side} side of '{op.symbol}'"
    if op.symbol:
        return f"the operand of '{op.symbol.strip()}'"
    return f"argument {spec.name} of '{op.name}'"
