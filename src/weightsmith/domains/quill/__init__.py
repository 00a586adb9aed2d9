"""Quill: the shipped sample domain, a small quantitative-research language.

A Quill program defines signals, filters and a portfolio over a panel of daily market data:

    signal mom = rank(delta(close, 5))
    filter liquid = ts_mean(volume, 20) > 1e6
    portfolio long_short(mom, where=liquid, top=0.2)

Modules: ``ops`` (the operator table, the single source of truth), ``parser``/``check`` (source
-> typed tree, errors with line:col), ``interp`` (numpy interpreter), ``panel`` (synthetic market
data), ``corpus`` (the manual), ``generate``/``tasks``/``datasets`` (task data and splits),
``phrasebook`` + ``phrasebook.yaml`` (every way a request is worded, as data) and ``describe`` (the
request renderer), and ``verify`` (execution-based rewards, registered as quill_exec, quill_exec_steps, quill_exec_match,
quill_parses).
"""

from weightsmith.domains.quill.corpus import Document, build_manual, write_manual
from weightsmith.domains.quill.datasets import build_datasets
from weightsmith.domains.quill.describe import Rendering, render_request
from weightsmith.domains.quill.errors import QuillSyntaxError
from weightsmith.domains.quill.generate import HELDOUT_PAIRS, GeneratorConfig, structural_pairs
from weightsmith.domains.quill.interp import evaluate_expr, run
from weightsmith.domains.quill.nodes import Program, format_program
from weightsmith.domains.quill.ops import FIELDS, OPS, PORTFOLIO_KINDS
from weightsmith.domains.quill.panel import Panel, make_panel, panel_from_arrays
from weightsmith.domains.quill.parser import parse, parse_expression
from weightsmith.domains.quill.phrasebook import Family, PhraseBook, load_phrasebook
from weightsmith.domains.quill.tasks import (
    Task, chat_rows, eval_rows, make_splits, phrasing_split_violations, program_key, prompt_rows,
    structural_split_violations)
from weightsmith.domains.quill.verify import (
    preference_pairs, quill_exec, quill_exec_match, quill_exec_steps, quill_parses)

__all__ = [
    "Document", "FIELDS", "Family", "GeneratorConfig", "HELDOUT_PAIRS", "OPS", "PORTFOLIO_KINDS", "Panel",
    "PhraseBook", "Program", "QuillSyntaxError", "Rendering", "Task", "build_datasets", "build_manual", "chat_rows",
    "eval_rows", "evaluate_expr", "format_program", "load_phrasebook", "make_panel", "make_splits",
    "panel_from_arrays", "parse", "parse_expression", "phrasing_split_violations", "preference_pairs",
    "program_key", "prompt_rows", "quill_exec", "quill_exec_match", "quill_exec_steps", "quill_parses",
    "render_request", "run",
    "structural_pairs", "structural_split_violations", "write_manual",
]
