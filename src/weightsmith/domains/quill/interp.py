"""Run a Quill program on a panel with numpy: ``run(program, panel) -> {name: array}``.

Outputs: every signal (float array, days x assets), every filter (bool array) and, when the
program has a portfolio, ``portfolio`` (its weights, days x assets) and ``pnl`` (daily profit of
holding the previous day's weights, length days). Runs are deterministic: same program, same
panel, same bits.
"""

from __future__ import annotations

import numpy as np

from weightsmith.domains.quill import kernels
from weightsmith.domains.quill.nodes import (
    PNL_OUTPUT, PORTFOLIO_OUTPUT, Expr, Filter, Num, Portfolio, Program, Ref, Signal)
from weightsmith.domains.quill.ops import OPS, PORTFOLIO_KINDS, Arg
from weightsmith.domains.quill.panel import Panel
from weightsmith.domains.quill.parser import parse, parse_expression


def run(program: Program | str, panel: Panel) -> dict[str, np.ndarray]:
    """Evaluate every statement of ``program`` (source text or a parsed Program) on ``panel``."""
    if isinstance(program, str):
        program = parse(program)
    evaluator = _Evaluator(panel)
    outputs: dict[str, np.ndarray] = {}
    with np.errstate(all="ignore"):
        for stmt in program.statements:
            if isinstance(stmt, Signal):
                outputs[stmt.name] = evaluator.names[stmt.name] = evaluator.series(stmt.expr)
            elif isinstance(stmt, Filter):
                outputs[stmt.name] = evaluator.names[stmt.name] = evaluator.mask(stmt.expr)
            elif isinstance(stmt, Portfolio):
                kind = PORTFOLIO_KINDS[stmt.kind]
                signal = evaluator.series(stmt.signal)
                where = evaluator.mask(stmt.where) if stmt.where is not None else np.ones(panel.shape, bool)
                top = stmt.top if stmt.top is not None else kind.default_top
                weights = kind.impl(signal, where, top)
                outputs[PORTFOLIO_OUTPUT] = weights
                outputs[PNL_OUTPUT] = kernels.pnl(weights, panel["returns"])
    return outputs


def evaluate_expr(expr: Expr | str, panel: Panel, names: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Evaluate one expression (series or condition); handy for the manual and for tests."""
    names = names or {}
    if isinstance(expr, str):
        kinds = {name: "mask" if value.dtype == bool else "series" for name, value in names.items()}
        expr, _ = parse_expression(expr, kinds)
    evaluator = _Evaluator(panel)
    evaluator.names.update(names)
    with np.errstate(all="ignore"):
        value = evaluator.value(expr)
    return evaluator.broadcast(value) if not isinstance(value, np.ndarray) else value


class _Evaluator:
    def __init__(self, panel: Panel):
        self.panel = panel
        self.names: dict[str, np.ndarray] = {}
        # Equal subtrees are computed once: programs often repeat a piece, e.g. ts_mean(volume, 20).
        self.memo: dict[Expr, np.ndarray] = {}

    def broadcast(self, value: float) -> np.ndarray:
        return np.full(self.panel.shape, float(value))

    def series(self, expr: Expr) -> np.ndarray:
        value = self.value(expr)
        return value if isinstance(value, np.ndarray) else self.broadcast(value)

    def mask(self, expr: Expr) -> np.ndarray:
        return self.value(expr)

    def value(self, expr: Expr):
        if isinstance(expr, Num):
            return expr.value
        if isinstance(expr, Ref):
            return self.names[expr.name] if expr.name in self.names else self.panel[expr.name]
        if expr in self.memo:
            return self.memo[expr]
        op = OPS[expr.op]
        result = op.impl(*(self.argument(arg, spec) for arg, spec in zip(expr.args, op.args)))
        result = np.broadcast_to(result, self.panel.shape)
        result = result.astype(bool) if op.returns == "mask" else kernels.finite(result)
        self.memo[expr] = result
        return result

    def argument(self, expr: Expr, spec: Arg):
        if spec.kind == "series":
            return self.series(expr)
        if spec.kind == "window":
            return int(expr.value)
        if spec.kind == "scalar":
            return float(expr.value)
        return self.value(expr)  # group labels and masks
