"""The Quill manual: the text a model pre-trains on before it sees a single task.

``build_manual()`` returns the documents (reference pages generated from the operator table,
tutorials, the grammar, a style guide, and a cookbook of worked examples whose commentary is
computed by running them); ``write_manual()`` writes them as a folder of Markdown files.
Held-out operator pairs never appear in it, so the held-out split stays unseen.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np

from weightsmith.domains.quill.describe import describe_expr, describe_program
from weightsmith.domains.quill.errors import QuillSyntaxError
from weightsmith.domains.quill.generate import GeneratorConfig, ProgramGenerator
from weightsmith.domains.quill.interp import run
from weightsmith.domains.quill.manual_guides import guide_pages
from weightsmith.domains.quill.manual_reference import SAMPLE_SEED, reference_pages, sample_panel
from weightsmith.domains.quill.mdtable import code, fmt
from weightsmith.domains.quill.nodes import (
    PORTFOLIO_OUTPUT, Call, Filter, Num, Portfolio, Program, Signal, format_expr, format_program, statement_exprs,
    subexpressions)
from weightsmith.domains.quill.ops import OPS
from weightsmith.domains.quill.parser import parse, parse_expression

EXAMPLES_PER_PAGE = 10


class Document(NamedTuple):
    title: str
    text: str
    slug: str  # relative path without .md, e.g. "reference/rank"


def build_manual(seed: int = 0, n_examples: int = 200) -> list[Document]:
    """All manual documents; the same seed gives the same text.

    Args:
        seed: seeds the cookbook's programs and phrasings.
        n_examples: number of worked examples in the cookbook.
    """
    pages = guide_pages() + reference_pages() + cookbook_pages(seed, n_examples)
    return [Document(_title(text), text, slug) for slug, text in pages]


def write_manual(documents: list[Document], out_dir: str | Path) -> list[Path]:
    """Write each document to ``out_dir/<slug>.md``; returns the paths written."""
    out = Path(out_dir)
    paths = []
    for doc in documents:
        path = out / f"{doc.slug}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(doc.text, encoding="utf-8")
        paths.append(path)
    return paths


def _title(text: str) -> str:
    first = text.lstrip().splitlines()[0]
    return first.lstrip("#").strip()


# ---- cookbook ---------------------------------------------------------------------------------


def cookbook_pages(seed: int, n_examples: int) -> list[tuple[str, str]]:
    # A seed stream of its own: the cookbook must not replay the task generator's draws.
    rng = random.Random(f"quill-cookbook-{seed}")
    generator = ProgramGenerator(rng, sample_panel(), GeneratorConfig(depth_weights=(0.25, 0.4, 0.25, 0.1)))
    examples = [worked_example(i + 1, generator.program(), rng) for i in range(n_examples)]
    pages = []
    for start in range(0, len(examples), EXAMPLES_PER_PAGE):
        chunk = examples[start:start + EXAMPLES_PER_PAGE]
        number = start // EXAMPLES_PER_PAGE + 1
        header = (f"# Cookbook {number}: worked examples {start + 1} to {start + len(chunk)}\n\n"
                  "Each example gives a research request, the program that answers it, how the program "
                  f"computes its answer, and what it computes on the sample panel (seed {SAMPLE_SEED}, "
                  f"{sample_panel().shape[0]} days, {sample_panel().shape[1]} assets).")
        pages.append((f"cookbook/{number:02d}", header + "\n\n" + "\n\n".join(chunk) + "\n"))
    return pages


def worked_example(number: int, program: Program, rng: random.Random) -> str:
    source = format_program(program)
    parts = [f"## Example {number}: {program.statements[0].name if not isinstance(program.statements[0], Portfolio) else 'portfolio'}",
             f"Request: {describe_program(program, rng)}",
             code(source),
             "How it works, from the inside out:",
             "\n".join(f"{i}. {step}" for i, step in enumerate(explain_steps(program, rng), start=1)),
             describe_result(program)]
    variation = describe_variation(program)
    if variation:
        parts.append(variation)
    return "\n\n".join(parts)


def explain_steps(program: Program, rng: random.Random) -> list[str]:
    steps, seen = [], set()
    for stmt in program.statements:
        if isinstance(stmt, Portfolio):
            where = f", among the assets where `{format_expr(stmt.where)}` holds" if stmt.where is not None else ""
            top = f", with top={fmt(stmt.top)}" if stmt.top is not None else ", with the default top of 0.2"
            if stmt.kind == "weighted":
                top = ""
            steps.append(f"`portfolio {stmt.kind}(...)` turns `{format_expr(stmt.signal)}` into "
                         f"{OPS_PORTFOLIO_WORDS[stmt.kind]}{where}{top}.")
            continue
        nodes = [n for n in subexpressions(stmt.expr) if isinstance(n, Call)]
        for node in reversed(nodes):  # children before parents
            text = format_expr(node)
            if text in seen:
                continue
            seen.add(text)
            verb = "is true where" if OPS[node.op].returns == "mask" else "is"
            steps.append(f"`{text}` {verb} {describe_expr(node, rng)} ({OPS[node.op].category}).")
        kind = "signal" if isinstance(stmt, Signal) else "filter"
        steps.append(f"The result is named `{stmt.name}`, a {kind}.")
    return steps


OPS_PORTFOLIO_WORDS = {
    "long_short": "equal long weights on its highest values and equal short weights on its lowest",
    "long_only": "equal long weights on its highest values",
    "weighted": "weights proportional to its demeaned values",
}


def describe_result(program: Program) -> str:
    panel = sample_panel()
    outputs = run(program, panel)
    result = outputs[program.result_name]
    day = panel.shape[0] - 1
    if program.result_name == PORTFOLIO_OUTPUT:
        pnl = outputs["pnl"]
        held = (np.abs(result) > 0).sum(axis=1)
        longs = [panel.assets[i] for i in np.flatnonzero(result[day] > 0)]
        shorts = [panel.assets[i] for i in np.flatnonzero(result[day] < 0)]
        return (f"On the sample panel the portfolio holds {fmt(held.mean())} positions a day on average. On the "
                f"last day it is long {', '.join(longs) or 'nothing'}"
                f"{' and short ' + ', '.join(shorts) if shorts else ''}. Its mean daily pnl is "
                f"{fmt(pnl[1:].mean() * 1e4)} basis points and it makes money on {fmt(100 * (pnl[1:] > 0).mean())}% "
                "of days; on random data that is luck, not skill.")
    if result.dtype == bool:
        passing = [panel.assets[i] for i in np.flatnonzero(result[day])]
        return (f"On the sample panel `{program.result_name}` is true for {fmt(100 * result.mean())}% of "
                f"asset-days; on the last day it keeps {', '.join(passing) or 'no asset'}.")
    finite = np.isfinite(result)
    first = int(np.argmax(finite.any(axis=1)))
    last = result[day]
    values = ", ".join(f"{a} {fmt(v)}" for a, v in zip(panel.assets, last))
    best = panel.assets[int(np.nanargmax(last))] if np.isfinite(last).any() else "none"
    return (f"On the sample panel `{program.result_name}` is first defined on day {first} and ranges from "
            f"{fmt(np.nanmin(result))} to {fmt(np.nanmax(result))}. On the last day: {values}; the highest "
            f"is {best}.")


def describe_variation(program: Program) -> str | None:
    """Change the first window and say how much the answer moves: a near miss is a different program."""
    for stmt in program.statements:
        for expr in statement_exprs(stmt) if not isinstance(stmt, Portfolio) else []:
            for node in subexpressions(expr):
                if not isinstance(node, Call):
                    continue
                window = OPS[node.op].window_arg()
                if window is None:
                    continue
                index = OPS[node.op].args.index(window)
                old = int(node.args[index].value)
                new = next((w for w in window.choices if w != old and w >= OPS[node.op].min_window), None)
                if new is None:
                    continue
                variant = format_program(program).replace(format_expr(node), format_expr(
                    Call(node.op, node.args[:index] + (Num(float(new)),) + node.args[index + 1:])), 1)
                return _compare_variant(program, variant, node, old, new)
    return None


def _compare_variant(program: Program, variant: str, node: Call, old: int, new: int) -> str | None:
    panel = sample_panel()
    a = run(program, panel)[program.result_name]
    try:
        b = run(parse(variant), panel)[program.result_name]
    except QuillSyntaxError:
        return None
    if a.dtype == bool:
        agree = 100 * (a == b).mean()
        closeness = f"the two agree on {fmt(agree)}% of asset-days"
    else:
        both = np.isfinite(a) & np.isfinite(b)
        if both.sum() < 3 or np.std(a[both]) == 0 or np.std(b[both]) == 0:
            return None
        closeness = f"the correlation between the two answers is {fmt(np.corrcoef(a[both], b[both])[0, 1])}"
    return (f"A near miss: with a window of {new} instead of {old} in `{node.op}`, {closeness}. "
            f"Similar is not equal, so that program would be wrong:\n\n{code(variant)}")


# ---- what the manual shows, for keeping eval data out of it -----------------------------------

_FENCED = re.compile(r"```quill\n(.*?)```", re.S)
_INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")


def manual_programs(documents: list[Document]) -> list[str]:
    """Every program the manual prints: fenced quill blocks, their single statements, and
    inline code that parses as a program or as an expression (wrapped as a statement)."""
    found: list[str] = []
    for doc in documents:
        for block in _FENCED.findall(doc.text):
            found.append(block.strip())
            found.extend(line.strip() for line in block.splitlines() if line.strip())
        for span in _INLINE.findall(doc.text):
            found.append(span.strip())
    programs = []
    for text in found:
        try:
            programs.append(format_program(parse(text)))
            continue
        except QuillSyntaxError:
            pass
        try:
            expr, kind = parse_expression(text)
        except QuillSyntaxError:
            continue
        if kind not in ("series", "mask"):
            continue  # `sector` alone is not a program
        statement = Signal("s", expr) if kind == "series" else Filter("f", expr)
        programs.append(format_program(Program((statement,))))
    return programs
