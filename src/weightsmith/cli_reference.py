"""CLI verbs that read the reference generated from the code: ``stages``, ``sizes``, ``metrics``, ``reference``.

They need no workspace: what they print comes from the recipes' configs, the size table and the
metric registry (:mod:`weightsmith.reference`), the same documents as ``docs/reference/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from weightsmith.cli_render import emit, table, terminal_width


def add_parsers(verbs, common: argparse.ArgumentParser) -> None:
    """Add ``stages``, ``sizes``, ``metrics`` and ``reference`` to the top-level verbs."""
    p = verbs.add_parser("stages", parents=[common], help="the stage kinds; with KIND, its keys, types and defaults")
    p.add_argument("kind", nargs="?", help="a stage kind, e.g. sft")
    verbs.add_parser("sizes", parents=[common], help="the model sizes a pretrain stage builds, with parameter counts")
    verbs.add_parser("metrics", parents=[common], help="every KPI metric / reward and the columns it reads")
    p = verbs.add_parser("reference", parents=[common], help="write the Markdown reference (docs/reference/)")
    p.add_argument("--output", "-o", default="docs/reference", help="the folder to write (default docs/reference)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 when the folder differs from the code")


def cmd_stages(args) -> int:
    from weightsmith import reference

    if args.kind is None:
        doc = [reference.stage_reference(k) for k in reference.stage_kinds()]
        emit(args, doc, lambda _d: print(reference.stages_text(width=terminal_width())))
    else:
        doc = reference.stage_reference(args.kind)
        emit(args, doc, lambda _d: print(reference.stages_text(args.kind, width=terminal_width())))
    return 0


def cmd_sizes(args) -> int:
    from weightsmith import reference

    doc = reference.sizes_reference()

    def human(d: dict) -> None:
        columns, rows = reference.sizes_doc_rows(d)
        table(f"model sizes (parameters at a {d['vocab_size']:,}-token vocabulary)", columns, rows)

    emit(args, doc, human)
    return 0


def cmd_metrics(args) -> int:
    from weightsmith import reference

    emit(args, reference.metrics_reference(), lambda _d: print(reference.metrics_text(width=terminal_width())))
    return 0


def cmd_reference(args) -> int:
    from weightsmith import reference

    out = Path(args.output)
    if args.check:
        stale = reference.stale_files(out)
        emit(args, {"output": str(out), "stale": stale}, lambda d: print(
            f"{d['output']} is up to date" if not d["stale"] else
            f"{d['output']}: {', '.join(d['stale'])} differ from the code; run 'weightsmith reference --output "
            f"{d['output']}'", file=sys.stdout if not d["stale"] else sys.stderr))
        return 1 if stale else 0
    written = reference.write_reference(out)
    emit(args, {"output": str(out), "files": [p.name for p in written]},
         lambda d: print(f"Wrote {len(d['files'])} files to {d['output']}: {', '.join(d['files'])}"))
    return 0


COMMANDS = {"stages": cmd_stages, "sizes": cmd_sizes, "metrics": cmd_metrics, "reference": cmd_reference}
