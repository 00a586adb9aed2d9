"""Reference pages of the Quill manual, generated from the operator table.

One page per operator (signature, meaning, arguments, computed examples, the English phrasings
that ask for it, the errors its common mistakes raise), plus pages for fields, portfolio kinds
and an index. Every number shown is computed by the interpreter on the sample panel.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from weightsmith.domains.quill.errors import QuillSyntaxError
from weightsmith.domains.quill.interp import evaluate_expr, run
from weightsmith.domains.quill.mdtable import code, fmt, table
from weightsmith.domains.quill.nodes import Call, Num, format_expr, format_number
from weightsmith.domains.quill.ops import ARG_KINDS, CATEGORIES, FIELDS, OPS, PORTFOLIO_KINDS, Op
from weightsmith.domains.quill.panel import Panel, make_panel
from weightsmith.domains.quill.parser import parse, parse_expression

SAMPLE_SEED = 7
KIND_MEANING = {
    "series": "a numeric series (a field, a signal name, an expression, or a number broadcast to every cell)",
    "window": "a positive integer literal: a number of trading days",
    "scalar": "a number literal",
    "group": "a group label field: sector",
    "mask": "a condition: a comparison, a filter name, or and/or/not of conditions",
}
# Simple arguments used to show each phrasing next to the code it asks for.
_SAMPLE_ARGS = {"x": ("close", "close"), "y": ("volume", "volume"), "a": ("close", "close"),
                "b": ("open", "open"), "g": ("sector", "sector"), "cond": ("close > open", "close is above open")}


@lru_cache(maxsize=1)
def sample_panel() -> Panel:
    """The small panel every manual example runs on: 40 days, 6 assets, 2 sectors."""
    return make_panel(SAMPLE_SEED, days=40, assets=6, sectors=2, late_listings=False)


def error_of(source: str) -> str:
    """The error message ``source`` really raises (the manual quotes the parser, not a guess)."""
    try:
        parse(source)
    except QuillSyntaxError as exc:
        return str(exc)
    raise AssertionError(f"expected an error from {source!r}")


def example_table(expr_source: str) -> str:
    """A computed table for one example expression on the sample panel."""
    panel = sample_panel()
    expr, kind = parse_expression(expr_source)
    result = evaluate_expr(expr, panel)
    inputs = []
    if isinstance(expr, Call):
        for arg, spec in zip(expr.args, OPS[expr.op].args):
            if spec.kind in ("series", "mask") and not isinstance(arg, Num):
                inputs.append((format_expr(arg), evaluate_expr(arg, panel)))
    header_inputs = [f"`{name}`" for name, _ in inputs]
    days = panel.shape[0]
    if isinstance(expr, Call) and OPS[expr.op].category == "time-series":
        asset = 0
        rows = [[str(day)] + [values[day, asset] for _, values in inputs] + [result[day, asset]]
                for day in range(days - 8, days)]
        note = (f"The last 8 days of asset {panel.assets[asset]} on the sample panel (seed {SAMPLE_SEED}); "
                "a time-series operator only looks down its own column.")
        return note + "\n\n" + table(["day"] + header_inputs + [f"`{expr_source}`"], rows)
    day = days - 1
    rows = [[panel.assets[i], panel.sector_names[panel.sector[i]]] + [v[day, i] for _, v in inputs] + [result[day, i]]
            for i in range(panel.shape[1])]
    note = (f"Day {day} (the last day) of the sample panel (seed {SAMPLE_SEED}), one row per asset; "
            f"the result is {'a condition' if kind == 'mask' else 'a number'} per asset.")
    return note + "\n\n" + table(["asset", "sector"] + header_inputs + [f"`{expr_source}`"], rows)


def _statement_for(expr_source: str) -> str:
    _, kind = parse_expression(expr_source)
    return f"{'filter' if kind == 'mask' else 'signal'} example = {expr_source}"


def phrasing_examples(op: Op) -> list[tuple[str, str]]:
    """(English, code) for each phrasing of ``op``, with simple arguments filled in."""
    code_args, words = [], {}
    for spec in op.args:
        if spec.kind == "window":
            value = str(spec.choices[1] if len(spec.choices) > 1 else spec.choices[0])
            code_args.append(value)
            words[spec.name] = value
        elif spec.kind == "scalar":
            value = format_number(spec.choices[0])
            code_args.append(value)
            words[spec.name] = value
        else:
            source, english = _SAMPLE_ARGS[spec.name]
            code_args.append(source)
            words[spec.name] = english
    if op.symbol and op.arity == 2:
        source = f"{code_args[0]} {op.symbol} {code_args[1]}"
    elif op.symbol:
        source = f"{op.symbol}{' ' if op.symbol.isalpha() else ''}{code_args[0]}"
    else:
        source = f"{op.name}({', '.join(code_args)})"
    if op.category == "logic":
        source = ("close > open and volume > 1e6" if op.arity == 2 else "not close > open")
        if op.name == "or":
            source = "close > open or volume > 1e6"
        words = {"a": "close is above open", "b": "volume exceeds 1e6"}
    return [(phrase.format(**words).replace(" 1 days", " 1 day"), format_expr(parse_expression(source)[0]))
            for phrase in op.phrases]


def mistakes(op: Op) -> list[tuple[str, str]]:
    """(wrong program, the error it raises) for the usual slips with ``op``."""
    out = []
    args = [a for a in (phrasing_examples(op)[0][1],)]
    if op.symbol:
        if op.arity == 2 and op.category != "logic":
            out.append(f"signal s = {op.name}(close, open)")
        if op.returns == "mask":
            out.append(f"signal s = {args[0]}")
        else:
            out.append(f"filter f = {args[0]}")
    else:
        parsed = parse_expression(args[0])[0]
        shown = [format_expr(a) for a in parsed.args]
        out.append(f"signal s = {op.name}({', '.join(shown[:-1])})")
        window = op.window_arg()
        if window:
            fixed = [s if spec.kind != "window" else "2.5" for s, spec in zip(shown, op.args)]
            out.append(f"signal s = {op.name}({', '.join(fixed)})")
            if op.min_window > 1:
                fixed = [s if spec.kind != "window" else "1" for s, spec in zip(shown, op.args)]
                out.append(f"signal s = {op.name}({', '.join(fixed)})")
        for spec_index, spec in enumerate(op.args):
            if spec.kind in ("group", "mask", "scalar"):
                fixed = list(shown)
                fixed[spec_index] = "volume"
                out.append(f"signal s = {op.name}({', '.join(fixed)})")
        if len(op.name) > 3:
            typo = op.name[:-2] + op.name[-1]
            out.append(f"signal s = {typo}({', '.join(shown)})")
    return [(source, error_of(source)) for source in out]


def operator_page(op: Op) -> tuple[str, str]:
    related = [o for o in OPS.values() if o.category == op.category and o.name != op.name]
    parts = [
        f"# {op.name}: {op.summary}",
        f"Category: {op.category}. Written as `{op.signature}`. Returns "
        f"{'a condition (true/false per asset and day)' if op.returns == 'mask' else 'a numeric series'}.",
        op.doc,
        "## Arguments",
        table(["argument", "kind", "meaning"], [[f"`{a.name}`", a.kind, f"{a.doc}; {KIND_MEANING[a.kind]}"]
                                                 for a in op.args]),
    ]
    window = op.window_arg()
    if window:
        parts.append(f"The window must be written as a whole number such as {window.choices[-1]}; "
                     f"the smallest allowed is {op.min_window}. A window of n uses "
                     f"{'n' if op.lookback_offset == 0 else 'n - 1'} days of history before the first value.")
    parts.append("## Examples")
    for example in op.examples:
        parts.append(code(_statement_for(example)))
        parts.append(example_table(example))
    parts.append("## How requests ask for it")
    parts.append("\n".join(f"- \"{english}\" is written `{source}`" for english, source in phrasing_examples(op)))
    parts.append("## Common mistakes")
    for source, message in mistakes(op):
        parts.append(code(source, "text"))
        parts.append("is rejected with\n\n" + code(message, "text"))
    if related:
        parts.append("## See also")
        parts.append(", ".join(f"`{o.signature}` ({o.summary})" for o in related))
    return f"reference/{op.name}", "\n\n".join(parts) + "\n"


def index_page() -> tuple[str, str]:
    parts = ["# Operator index",
             f"Quill has {len(OPS)} operators. Each has its own reference page; this index groups them."]
    for category in CATEGORIES:
        ops = [o for o in OPS.values() if o.category == category]
        parts.append(f"## {category}")
        parts.append(table(["operator", "written as", "returns", "what it does"],
                           [[o.name, f"`{o.signature}`", "condition" if o.returns == "mask" else "series", o.summary]
                            for o in ops]))
    parts.append("## Argument kinds")
    parts.append(table(["kind", "what you may write there"], [[k, KIND_MEANING[k]] for k in ARG_KINDS]))
    return "reference/index", "\n\n".join(parts) + "\n"


def fields_page() -> tuple[str, str]:
    panel = sample_panel()
    day = panel.shape[0] - 1
    rows = []
    for name, spec in FIELDS.items():
        values = panel[name]
        if spec.kind == "group":
            sample = ", ".join(panel.sector_names[g] for g in panel.sector[:3])
        else:
            sample = ", ".join(fmt(v) for v in values[day, :3])
        rows.append([f"`{name}`", spec.kind, spec.doc, sample])
    parts = [
        "# Fields",
        "A Quill program reads a panel: one row per trading day, one column per asset. These names are "
        "always defined; they cannot be redefined.",
        table(["field", "kind", "meaning", f"last day, first 3 assets (sample panel, seed {SAMPLE_SEED})"], rows),
        "`sector` is not a number. It is a group label, and the only place it may appear is the group "
        "argument of " + ", ".join(f"`{o.name}`" for o in OPS.values() if o.category == "group") + ":",
        code("signal neutral = group_demean(returns, sector)"),
        "Using it anywhere else is an error:",
        code("signal s = returns - sector", "text"),
        code(error_of("signal s = returns - sector"), "text"),
        "`returns` is derived from `close`: close divided by the previous close, minus 1. Its first day "
        "is NaN because there is no previous close. So `returns` and `pct_change(close, 1)` compute the same thing:",
        code("signal a = returns\nsignal b = pct_change(close, 1)"),
    ]
    return "reference/fields", "\n\n".join(parts) + "\n"


def portfolio_page(kind_name: str) -> tuple[str, str]:
    kind = PORTFOLIO_KINDS[kind_name]
    panel = sample_panel()
    option = ", top=0.3" if kind.uses_top and kind.max_top >= 0.3 else ""
    source = (f"signal mom = rank(delta(close, 5))\nfilter liquid = ts_mean(volume, 10) > 5e5\n"
              f"portfolio {kind.name}(mom, where=liquid{option})")
    outputs = run(source, panel)
    weights, pnl = outputs["portfolio"], outputs["pnl"]
    day = panel.shape[0] - 1
    rows = [[panel.assets[i], outputs["mom"][day, i], outputs["liquid"][day, i], weights[day, i]]
            for i in range(panel.shape[1])]
    held = (np.abs(weights) > 0).sum(axis=1)
    parts = [
        f"# portfolio {kind.name}: {kind.summary}",
        kind.doc,
        f"Written as `portfolio {kind.name}(signal{', where=filter, top=fraction' if kind.uses_top else ', where=filter'})`. "
        "The signal may be a signal name or any numeric expression; `where=` takes a filter name or any "
        "condition and defaults to every asset; " + (f"`top=` is a number literal, default {kind.default_top}."
                                                     if kind.uses_top else "there is no `top=`."),
        "A portfolio is the last statement of a program. Its output `portfolio` holds the weights per day and "
        "asset; `pnl` is the daily profit of holding the previous day's weights over the day's returns.",
        "## Example",
        code(source),
        f"On the last day of the sample panel (seed {SAMPLE_SEED}):",
        table(["asset", "mom", "liquid", "weight"], rows),
        f"Over the {panel.shape[0]} days it holds {fmt(held.mean())} positions a day on average, its gross "
        f"exposure (sum of absolute weights) is {fmt(np.abs(weights).sum(axis=1)[held > 0].mean())} on the days it "
        f"trades, and its mean daily pnl is {fmt(pnl.mean() * 1e4)} basis points.",
    ]
    return f"reference/portfolio_{kind.name}", "\n\n".join(parts) + "\n"


def reference_pages() -> list[tuple[str, str]]:
    pages = [index_page(), fields_page()]
    pages += [operator_page(op) for op in OPS.values()]
    pages += [portfolio_page(name) for name in PORTFOLIO_KINDS]
    return pages
