"""Random well-typed Quill programs, drawn from the operator table.

The generator builds trees directly (not strings), keeps every program inside a lookback budget
so it is defined on most of a verification panel, avoids compositions that say nothing new
(``rank(rank(x))``), and rejects programs whose answer is degenerate on the check panel (mostly
NaN, constant, a filter that keeps everyone or no one): a task whose reference is degenerate
would accept wrong answers.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass, field

import numpy as np

from weightsmith.domains.quill.interp import evaluate_expr, run
from weightsmith.domains.quill.nodes import (
    Call, Expr, Filter, Num, Portfolio, Program, Ref, Signal, format_program, statement_exprs, subexpressions)
from weightsmith.domains.quill.ops import OPS, PORTFOLIO_KINDS, Op
from weightsmith.domains.quill.panel import Panel

# (outer, inner) operator pairs that never appear in training data: the held-out split tests
# whether a model composes operators it has only seen separately.
HELDOUT_PAIRS: tuple[tuple[str, str], ...] = (
    ("rank", "ts_corr"),
    ("ts_mean", "delta"),
    ("zscore", "decay_linear"),
    ("group_demean", "ts_rank"),
    ("decay_linear", "rank"),
    ("sign", "delta"),
    ("ts_std", "pct_change"),
    ("scale", "ts_zscore"),
)

# How often each operator is drawn; operators not listed are not generated.
OP_WEIGHTS: dict[str, float] = {
    "delay": 2, "delta": 4, "pct_change": 2, "ts_mean": 4, "ts_sum": 2, "ts_std": 3, "ts_max": 2,
    "ts_min": 2, "ts_argmax": 1, "ts_argmin": 1, "ts_rank": 3, "ts_zscore": 2, "ts_corr": 2,
    "ts_cov": 1, "decay_linear": 2,
    "rank": 6, "zscore": 3, "demean": 2, "scale": 1.5, "winsorize": 1.5,
    "group_demean": 2, "group_rank": 2, "group_mean": 1,
    "abs": 1.5, "log": 1.5, "sqrt": 1, "sign": 1.5, "signed_power": 1, "max": 1, "min": 1, "if_else": 1,
    "add": 1.5, "sub": 3, "mul": 1.5, "div": 2.5, "neg": 1.5,
}
LEAF_WEIGHTS = {"close": 4, "open": 2, "high": 1.5, "low": 1.5, "volume": 2.5, "returns": 3}
# Literal second operands that read naturally: rank(x) - 0.5, max(x, 0), x * 100.
LITERAL_OPERANDS = {"add": (1,), "sub": (0.5, 1), "mul": (-1, 2, 100), "div": (2, 100), "max": (0,), "min": (0,)}
# Re-applying these to their own output changes nothing (rank(rank(x))) or cancels (-(-x)).
IDEMPOTENT = {"rank", "zscore", "demean", "scale", "winsorize", "group_demean", "group_rank", "group_mean",
              "abs", "sign", "neg"}
NEEDS_POSITIVE = {"log": 0.0, "sqrt": -1e-300}  # child must be > this on the check panel
# Units: adding, comparing or taking the max of a price and a volume is noise, not research.
FIELD_UNITS = {"close": "price", "open": "price", "high": "price", "low": "price", "volume": "shares",
               "returns": "return"}
UNIT_PRESERVING = {"delay", "delta", "ts_mean", "ts_sum", "ts_max", "ts_min", "ts_std", "decay_linear", "demean",
                   "winsorize", "group_demean", "group_mean", "abs", "max", "min", "add", "sub", "neg", "if_else"}
SAME_UNITS = {"add", "sub", "max", "min", "gt", "ge", "lt", "le"}

SIGNAL_NAMES = ("mom", "rev", "alpha", "sig", "trend", "value", "spread", "carry", "score", "tilt",
                "edge", "pulse", "drift", "swing", "skew", "heat", "flow", "lead", "fade", "bounce",
                "vol_sig", "liq_sig", "breakout", "mean_rev", "quality")
FILTER_NAMES = ("liquid", "active", "tradable", "calm", "big", "up_day", "trending", "cheap", "busy",
                "quiet", "screen", "ok", "strong", "stable", "hot")
TOP_CHOICES = {"long_short": (0.1, 0.2, 0.25, 0.3, None), "long_only": (0.1, 0.2, 0.3, 0.5, None), "weighted": (None,)}


@dataclass(frozen=True)
class GeneratorConfig:
    """Shape of the programs drawn. The defaults are small enough for a tiny model to learn."""

    depth_weights: tuple[float, ...] = (0.3, 0.45, 0.25)  # P(depth = 1, 2, 3, ...)
    p_filter: float = 0.2  # a single filter statement
    p_full: float = 0.15  # signal (+ filter) + portfolio
    p_filter_in_full: float = 0.7
    lookback_budget: int = 40  # days of history a program may use; verification panels have 80
    exclude_pairs: frozenset = field(default_factory=lambda: frozenset(HELDOUT_PAIRS))


def lookback(expr: Expr) -> int:
    """Days of history ``expr`` needs before it can be defined."""
    if not isinstance(expr, Call):
        return 0
    op = OPS[expr.op]
    own = 0
    for arg, spec in zip(expr.args, op.args):
        if spec.kind == "window":
            own = int(arg.value) + op.lookback_offset
    return own + max((lookback(a) for a in expr.args), default=0)


def units(expr: Expr) -> str | None:
    """'price', 'shares', 'return', 'unitless' or None (a bare number fits anything)."""
    if isinstance(expr, Num):
        return None
    if isinstance(expr, Ref):
        return FIELD_UNITS.get(expr.name, "unitless")
    if expr.op in UNIT_PRESERVING:
        series = [a for a, spec in zip(expr.args, OPS[expr.op].args) if spec.kind == "series"]
        found = [u for u in map(units, series) if u is not None]
        return found[0] if found else None
    return "unitless"


def structural_pairs(program: Program) -> set[tuple[str, str]]:
    """Every (outer operator, inner operator) pair where one is a direct argument of the other.

    Signal names are followed to their definitions, so splitting an expression into two
    signals does not hide a pair.
    """
    defined: dict[str, Expr] = {}
    pairs: set[tuple[str, str]] = set()

    def resolve(expr: Expr) -> Expr:
        return defined.get(expr.name, expr) if isinstance(expr, Ref) else expr

    def walk(expr: Expr) -> None:
        if isinstance(expr, Call):
            for arg in expr.args:
                child = resolve(arg)
                if isinstance(child, Call):
                    pairs.add((expr.op, child.op))
                walk(arg)

    for stmt in program.statements:
        exprs = [stmt.signal, stmt.where] if isinstance(stmt, Portfolio) else [stmt.expr]
        for expr in exprs:
            if expr is not None:
                walk(expr)
        if not isinstance(stmt, Portfolio):
            defined[stmt.name] = stmt.expr
    return pairs


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == bool:
        return bool(np.array_equal(a, b))
    return bool(np.array_equal(np.isnan(a), np.isnan(b))) and bool(
        np.allclose(np.nan_to_num(a), np.nan_to_num(b), rtol=1e-6, atol=1e-9))


def literal_variants(program: Program) -> list[str]:
    """The program with one window (+1), scalar (x1.5) or top (+0.1) changed at a time."""
    variants = []

    def bump(expr: Expr) -> list[Expr]:
        out = []
        if isinstance(expr, Call):
            specs = OPS[expr.op].args
            for i, (arg, spec) in enumerate(zip(expr.args, specs)):
                replacement = None
                if spec.kind == "window":
                    replacement = Num(arg.value + 1)
                elif spec.kind == "scalar":
                    replacement = Num(arg.value * 1.5)
                if replacement is not None:
                    out.append(Call(expr.op, expr.args[:i] + (replacement,) + expr.args[i + 1:]))
                for changed in bump(arg):
                    out.append(Call(expr.op, expr.args[:i] + (changed,) + expr.args[i + 1:]))
        return out

    for index, stmt in enumerate(program.statements):
        replaced: list = []
        if isinstance(stmt, (Signal, Filter)):
            replaced = [type(stmt)(stmt.name, e) for e in bump(stmt.expr)]
        elif stmt.top is not None and stmt.top + 0.1 <= PORTFOLIO_KINDS[stmt.kind].max_top:
            replaced = [Portfolio(stmt.kind, stmt.signal, stmt.where, round(stmt.top + 0.1, 6))]
        for new in replaced:
            statements = program.statements[:index] + (new,) + program.statements[index + 1:]
            variants.append(format_program(Program(statements)))
    return variants


class ProgramGenerator:
    """Draws programs with ``rng``; ``check_panel`` is where degenerate answers are caught."""

    def __init__(self, rng: random.Random, check_panel: Panel, config: GeneratorConfig | None = None):
        self.rng = rng
        self.panel = check_panel
        self.config = config or GeneratorConfig()

    # ---- programs ----------------------------------------------------------------------------

    def program(self, require_pair: tuple[str, str] | None = None, max_tries: int = 200) -> Program:
        """A non-degenerate program; with ``require_pair`` its signal contains that pair."""
        for _ in range(max_tries):
            program = self._draw(require_pair)
            if program is not None and not self.degenerate(program):
                return program
        raise RuntimeError(f"could not draw a non-degenerate program (require_pair={require_pair})")

    def _draw(self, require_pair) -> Program | None:
        roll = self.rng.random()
        depth = self.depth()
        signal_name = self.rng.choice(SIGNAL_NAMES)
        filter_name = self.rng.choice(FILTER_NAMES)
        if roll < self.config.p_filter:
            expr = self.condition(depth, require_pair)
            return None if expr is None else Program((Filter(filter_name, expr),))
        expr = self.with_pair(require_pair, depth) if require_pair else self.series(depth, self.budget())
        if expr is None:
            return None
        if roll < self.config.p_filter + self.config.p_full:
            statements = [Signal(signal_name, expr)]
            where = None
            if self.rng.random() < self.config.p_filter_in_full:
                cond = self.condition(self.rng.choice((1, 1, 2)), None)
                if cond is None:
                    return None
                statements.append(Filter(filter_name, cond))
                where = Ref(filter_name)
            kind = self.rng.choice(("long_short", "long_short", "long_only", "weighted"))
            statements.append(Portfolio(kind, Ref(signal_name), where, self.rng.choice(TOP_CHOICES[kind])))
            return Program(tuple(statements))
        return Program((Signal(signal_name, expr),))

    def depth(self) -> int:
        weights = self.config.depth_weights
        return self.rng.choices(range(1, len(weights) + 1), weights=weights)[0]

    def budget(self) -> int:
        return self.config.lookback_budget

    def degenerate(self, program: Program) -> bool:
        """True when the program's answer cannot tell a right program from a wrong one."""
        result = run(program, self.panel)[program.result_name]
        if self.degenerate_answer(program, result):
            return True
        return self.has_no_op(program) or not self.sensitive_to_literals(program, result)

    def has_no_op(self, program: Program) -> bool:
        """An operation whose output equals one of its inputs here (min(volume, high), abs of a
        price) teaches nothing and lets a shorter program pass as the same one."""
        for stmt in program.statements:
            for expr in statement_exprs(stmt):
                for node in subexpressions(expr):
                    if not isinstance(node, Call) or OPS[node.op].returns != "series":
                        continue
                    value = evaluate_expr(node, self.panel)
                    for arg, spec in zip(node.args, OPS[node.op].args):
                        if spec.kind == "series" and not isinstance(arg, Num) and _same(
                                value, evaluate_expr(arg, self.panel)):
                            return True
        return False

    def sensitive_to_literals(self, program: Program, result: np.ndarray) -> bool:
        """Every window, scalar and top must matter: one more day (or a bigger scalar) must change
        the answer, or a near miss would be graded correct."""
        source = format_program(program)
        for variant in literal_variants(program):
            if variant == source:
                continue
            if _same(run(variant, self.panel)[program.result_name], result):
                return False
        return True

    def degenerate_answer(self, program: Program, result: np.ndarray) -> bool:
        if result.dtype == bool:
            return not 0.05 <= result.mean() <= 0.95
        if program.result_name == "portfolio":
            return (np.abs(result).sum(axis=1) > 0).mean() < 0.5
        finite = np.isfinite(result)
        if finite.mean() < 0.5:
            return True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # rows with a single finite value
            per_day = np.nanstd(result[finite.any(axis=1)], axis=1)
        # Constant over the panel, or the same across assets on every day, says nothing.
        return np.nanstd(result) < 1e-12 or bool(np.all(per_day < 1e-12))

    # ---- expressions --------------------------------------------------------------------------

    def leaf(self) -> Ref:
        return Ref(self.rng.choices(list(LEAF_WEIGHTS), weights=list(LEAF_WEIGHTS.values()))[0])

    def eligible_ops(self, parent: str | None, budget: int, depth: int) -> list[Op]:
        ops = []
        for name in OP_WEIGHTS:
            op = OPS[name]
            if parent is not None and ((parent, name) in self.config.exclude_pairs
                                       or (parent == name and name in IDEMPOTENT)):
                continue
            window = op.window_arg()
            if window and not any(op.min_window <= n and n + op.lookback_offset <= budget for n in window.choices):
                continue
            if name == "if_else" and depth < 2:
                continue
            ops.append(op)
        return ops

    def series(self, depth: int, budget: int, parent: str | None = None) -> Expr | None:
        if depth <= 0:
            return self.leaf()
        ops = self.eligible_ops(parent, budget, depth)
        if not ops:
            return self.leaf()
        op = self.rng.choices(ops, weights=[OP_WEIGHTS[o.name] for o in ops])[0]
        return self.call(op, depth, budget)

    def call(self, op: Op, depth: int, budget: int, first: Expr | None = None) -> Expr | None:
        """Apply ``op`` with a first argument of depth ``depth - 1`` (or the given ``first``)."""
        window = op.window_arg()
        child_budget = budget
        n = None
        if window:
            choices = [w for w in window.choices if op.min_window <= w and w + op.lookback_offset <= budget]
            if not choices:
                return None
            n = self.rng.choice(choices)
            child_budget = budget - (n + op.lookback_offset)
        args: list[Expr] = []
        series_seen = 0
        for spec in op.args:
            if spec.kind == "window":
                args.append(Num(float(n)))
            elif spec.kind == "scalar":
                args.append(Num(float(self.rng.choice(spec.choices))))
            elif spec.kind == "group":
                args.append(Ref("sector"))
            elif spec.kind == "mask":
                cond = self.simple_comparison(min(1, depth - 1), child_budget)
                if cond is None:
                    return None
                args.append(cond)
            elif series_seen == 0:
                series_seen += 1
                child = first if first is not None else self.positive_child(op, depth - 1, child_budget)
                if child is None:
                    return None
                args.append(child)
            else:
                series_seen += 1
                args.append(self.second_operand(op, depth, child_budget, args[-1]))
        if op.name in ("add", "mul", "max", "min") and self.rng.random() < 0.5:
            args.reverse()  # commutative: the deep side may come either first or second
        elif op.name in ("sub", "div") and isinstance(args[1], Call) and self.rng.random() < 0.3:
            args.reverse()
        return Call(op.name, tuple(args))

    def positive_child(self, op: Op, depth: int, budget: int) -> Expr | None:
        if op.name not in NEEDS_POSITIVE:
            return self.series(depth, budget, op.name)
        for _ in range(8):
            child = self.series(depth, budget, op.name)
            if child is None:  # no well-typed child fitted this budget; draw again
                continue
            values = evaluate_expr(child, self.panel)
            if np.isfinite(values).any() and np.nanmin(values) > NEEDS_POSITIVE[op.name]:
                return child
        return None

    def second_operand(self, op: Op, depth: int, budget: int, first: Expr) -> Expr:
        # rank(x) - 0.5 centres a rank; volume - 1 is noise. Shifts only suit unitless values.
        shift_ok = op.name not in ("add", "sub") or units(first) in (None, "unitless")
        if op.name in LITERAL_OPERANDS and shift_ok and self.rng.random() < 0.3:
            return Num(float(self.rng.choice(LITERAL_OPERANDS[op.name])))
        for _ in range(6):
            other_depth = 0 if self.rng.random() < 0.6 else self.rng.randint(0, max(0, depth - 1))
            other = self.series(other_depth, budget, op.name)
            if other is None or other == first:  # close - close, ts_corr(x, x, n): nothing to learn
                continue
            if op.name in SAME_UNITS and units(other) != units(first):
                continue
            return other
        return Num(float(self.rng.choice(LITERAL_OPERANDS.get(op.name, (1,)))))

    def with_pair(self, pair: tuple[str, str], depth: int) -> Expr | None:
        """An expression containing ``outer(inner(...))``, sometimes wrapped once more."""
        outer, inner = OPS[pair[0]], OPS[pair[1]]
        budget = self.budget()
        outer_window = outer.window_arg()
        reserve = max(outer_window.choices) + outer.lookback_offset if outer_window else 0
        reserve = min(reserve, budget // 2)
        inner_expr = self.call(inner, max(1, depth - 1), budget - reserve)
        if inner_expr is None:
            return None
        expr = self.call(outer, 2, budget - lookback(inner_expr), first=inner_expr)
        if expr is not None and depth >= 3 and self.rng.random() < 0.3:
            wrappers = [o for o in self.eligible_ops(outer.name, budget - lookback(expr), 2)
                        if o.args[0].kind == "series" and OPS[o.name].window_arg() is None]
            if wrappers:
                op = self.rng.choices(wrappers, weights=[OP_WEIGHTS[o.name] for o in wrappers])[0]
                expr = self.call(op, 2, budget - lookback(expr), first=expr) or expr
        return expr

    # ---- conditions -------------------------------------------------------------------------

    def condition(self, depth: int, require_pair: tuple[str, str] | None) -> Expr | None:
        if require_pair:
            lhs = self.with_pair(require_pair, depth)
            return None if lhs is None else self.threshold(lhs)
        roll = self.rng.random()
        if roll < 0.15:
            left = self.simple_comparison(1, self.budget())
            right = self.simple_comparison(1, self.budget())
            if left is None or right is None or left == right:
                return None
            return Call(self.rng.choice(("and", "and", "or")), (left, right))
        if roll < 0.2:
            inner = self.simple_comparison(1, self.budget())
            return None if inner is None else Call("not", (inner,))
        return self.simple_comparison(depth, self.budget())

    def simple_comparison(self, depth: int, budget: int) -> Expr | None:
        """``lhs OP threshold`` or ``x OP smoothed x`` or ``a OP b``; the comparison counts as depth 1."""
        roll = self.rng.random()
        if roll < 0.6 or depth <= 0:
            lhs = self.series(max(0, depth - 1), budget, "gt")
            return None if lhs is None else self.threshold(lhs)
        if roll < 0.85:
            field_ref = self.leaf()
            smoother = self.rng.choice(("ts_mean", "delay", "decay_linear", "ts_max", "ts_min"))
            rhs = self.call(OPS[smoother], 1, budget, first=field_ref)
            if rhs is None:
                return None
            op = {"ts_max": "ge", "ts_min": "le"}.get(smoother, self.rng.choice(("gt", "lt")))
            return Call(op, (field_ref, rhs))
        left = self.series(max(0, depth - 1), budget, "gt")
        right = self.series(self.rng.randint(0, max(0, depth - 1)), budget, "gt")
        if left is None or right is None or left == right or units(left) != units(right):
            return None
        return Call(self.rng.choice(("gt", "lt")), (left, right))

    def threshold(self, lhs: Expr) -> Expr | None:
        values = evaluate_expr(lhs, self.panel)
        values = values[np.isfinite(values)]
        if values.size < 20 or np.ptp(values) == 0:
            return None
        if np.all(values == np.round(values)) and np.unique(values).size <= 25:
            # Counts and signs (ts_argmax, sign): compare with a whole number, sometimes exactly.
            level = float(self.rng.choice(sorted(np.unique(values))[: max(1, np.unique(values).size // 2)]))
            op = self.rng.choice(("eq", "ne", "gt", "le"))
            return Call(op, (lhs, Num(level)))
        level = float(f"{np.quantile(values, self.rng.choice((0.2, 0.3, 0.5, 0.7, 0.8))):.2g}")
        op = self.rng.choices(("gt", "lt", "ge", "le"), weights=(3, 3, 1, 1))[0]
        return Call(op, (lhs, Num(level)))
