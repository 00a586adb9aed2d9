"""How the CLI shows results: rich tables for people, exactly one JSON document with ``--json``.

Shared by every CLI module, so none of them imports another's internals.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any


def console():
    from rich.console import Console

    return Console(stderr=False, highlight=False)


def terminal_width() -> int:
    """The width people read at: the terminal's (``COLUMNS`` when set), 80 when there is none."""
    return console().width


def table(title: str, columns: list[str], rows: list[list[Any]], *, no_wrap: tuple[str, ...] = (),
          repeat: int = 1, optional: tuple[str, ...] = (), width: int | None = None) -> None:
    """Print a table that stays readable at the terminal's width (80 columns and up).

    Cells that are None print empty. When the table is wider than the terminal, in this order:
    long prose cells (reasons, errors) wrap in their own column if it can be 30 characters wide,
    else they are printed in full below the table as numbered notes; a table of many short columns
    (metrics, KPIs) is split into several, each repeating the first ``repeat`` columns; any other
    table is printed one record per row (``column: value``). Other cells are cut with an ellipsis
    only when a column still cannot have its full width. Columns named in ``optional`` (a path, say)
    are cut first, and left out, with a line saying so, when they cannot keep 24 characters. Columns
    named in ``no_wrap`` are never broken across lines (they may be cut).
    """
    out = console()
    for line in format_table(title, columns, rows, width=width or out.width, no_wrap=no_wrap, repeat=repeat,
                             optional=optional):
        if isinstance(line, str):  # a note or a record line, already wrapped: printed as written, never as markup
            out.print(line, markup=False, highlight=False, crop=False, soft_wrap=True)
        else:
            out.print(line)


# A column whose cells are sentences: it may wrap (several words a line) or become notes under the table.
_PROSE_MIN_WIDTH = 30
# Cells no longer than this make a "short" column: a table of many of them is split, not cut.
_SHORT_CELL = 12
_CUT_MIN = 16  # a cut column keeps at least this much (less reads as noise): else one record per row
_OPTIONAL_MIN = 24


def _cell_width(text: str) -> int:
    from rich.cells import cell_len

    return max((cell_len(line) for line in text.splitlines()), default=0)


def _is_prose(cells: list[str]) -> bool:
    filled = [c for c in cells if c]
    return bool(filled) and max(map(_cell_width, filled)) > _PROSE_MIN_WIDTH and \
        sum(" " in c.strip() for c in filled) * 2 >= len(filled)


def _overhead(ncols: int) -> int:
    return 3 * ncols + 1  # a border and a space either side of each cell (rich's default box)


def _level(natural: list[int], minimum: list[int], budget: int) -> list[int]:
    """Water-filling: the widest columns shrink first, none below its minimum; sums to at most ``budget``."""
    if sum(natural) <= budget:
        return list(natural)
    low, high = 0, max(natural)
    while low < high:  # the largest cap whose widths fit
        cap = (low + high + 1) // 2
        if sum(max(m, min(n, cap)) for n, m in zip(natural, minimum)) <= budget:
            low = cap
        else:
            high = cap - 1
    return [max(m, min(n, low)) for n, m in zip(natural, minimum)]


def format_table(title: str, columns: list[str], rows: list[list[Any]], *, width: int = 80,
                 no_wrap: tuple[str, ...] = (), repeat: int = 1, optional: tuple[str, ...] = ()) -> list:
    """What :func:`table` prints, as a list of rich renderables and plain lines (see :func:`table`)."""
    cells = [["" if v is None else str(v) for v in row] for row in rows]
    by_column = [[row[i] for row in cells] for i in range(len(columns))]
    natural = [max([_cell_width(columns[i]), *map(_cell_width, by_column[i])]) for i in range(len(columns))]
    budget = width - _overhead(len(columns))
    if sum(natural) <= budget:
        return [_rich_table(title, columns, cells, natural, no_wrap, wrap=(), width=width)]
    extra = [i for i, c in enumerate(columns) if c in optional]
    if extra:
        rest = sum(n for i, n in enumerate(natural) if i not in extra)
        if budget - rest >= _OPTIONAL_MIN * len(extra):  # the optional ones share what is left
            widths = list(natural)
            for i in extra:
                widths[i] = min(natural[i], (budget - rest) // len(extra))
            return [_rich_table(title, columns, cells, widths, no_wrap, wrap=(), width=width)]
        kept = [i for i in range(len(columns)) if i not in extra]
        dropped = ", ".join(columns[i] for i in extra)
        return [*format_table(title, [columns[i] for i in kept], [[row[i] for i in kept] for row in rows], width=width,
                              no_wrap=no_wrap, repeat=repeat),
                f"({dropped} left out at {width} columns; --json shows every field)"]
    prose = [i for i in range(len(columns)) if _is_prose(by_column[i])]
    others = [i for i in range(len(columns)) if i not in prose]
    rest = sum(natural[i] for i in others)
    # Prose wraps inline when the other columns keep their width and it still gets a readable column.
    if len(prose) == 1 and budget - rest >= min(natural[prose[0]], _PROSE_MIN_WIDTH):
        widths = list(natural)
        widths[prose[0]] = budget - rest
        return [_rich_table(title, columns, cells, widths, no_wrap, wrap=tuple(prose), width=width)]
    notes: list[str] = []
    if prose:  # numbered notes under the table, the cell keeps the number
        cells = [list(row) for row in cells]
        for row in cells:
            for i in prose:
                if row[i]:
                    notes.append(row[i])
                    row[i] = f"[{len(notes)}]"
        by_column = [[row[i] for row in cells] for i in range(len(columns))]
        natural = [max([_cell_width(columns[i]), *map(_cell_width, by_column[i])]) for i in range(len(columns))]
    if sum(natural) <= budget:
        return [_rich_table(title, columns, cells, natural, no_wrap, wrap=(), width=width), *_notes(notes, width)]
    keep = min(max(repeat, 0), len(columns) - 1)
    short = all(_cell_width(c) <= _SHORT_CELL for i in range(keep, len(columns)) for c in by_column[i])
    if short:
        return [*_split(title, columns, cells, natural, keep, width, no_wrap), *_notes(notes, width)]
    minimum = [min(n, max(_CUT_MIN, _cell_width(columns[i]))) for i, n in enumerate(natural)]
    if sum(minimum) <= budget:
        return [_rich_table(title, columns, cells, _level(natural, minimum, budget), no_wrap, wrap=(), width=width),
                *_notes(notes, width)]
    return _records(title, columns, [["" if v is None else str(v) for v in row] for row in rows], width)


def _rich_table(title: str, columns: list[str], cells: list[list[str]], widths: list[int],
                no_wrap: tuple[str, ...], wrap: tuple[int, ...], width: int = 80):
    from rich.table import Table
    from rich.text import Text

    # As wide as its title when there is room (else rich wraps the title over the columns' width).
    out = Table(title=title, title_justify="left", min_width=min(_cell_width(title), width))
    for i, (name, w) in enumerate(zip(columns, widths)):
        cut = max(_cell_width(c) for c in [row[i] for row in cells] or [""]) > w
        if i in wrap and name not in no_wrap:
            out.add_column(name, width=w, overflow="fold")
        elif _cell_width(name) > w and not cut:  # only the header is long: it folds, the values stay whole
            out.add_column(name, width=w, overflow="fold")
        else:
            out.add_column(name, width=w, no_wrap=True, overflow="ellipsis")
    for row in cells:
        out.add_row(*(Text(c) for c in row))  # Text, not markup: a user's "[bold]" prints as written
    return out


def _split(title: str, columns: list[str], cells: list[list[str]], natural: list[int], keep: int, width: int,
           no_wrap: tuple[str, ...]) -> list:
    """Several tables of short columns, each repeating the first ``keep`` columns."""
    fixed = list(range(keep))
    groups: list[list[int]] = [[]]
    for i in range(keep, len(columns)):
        used = sum(natural[j] for j in fixed + groups[-1])
        if groups[-1] and used + natural[i] > width - _overhead(keep + len(groups[-1]) + 1):
            groups.append([])
        groups[-1].append(i)
    tables = []
    for n, group in enumerate(groups, start=1):
        picked = fixed + group
        budget = width - _overhead(len(picked))
        widths = [natural[i] for i in picked]
        # A header longer than its values folds onto a second line rather than widening the table.
        widths = _level(widths, [max(_cell_width(c) for c in [row[i] for row in cells] or [""]) or 1 for i in picked],
                        budget)
        shown = title if len(groups) == 1 else f"{title} ({n}/{len(groups)})"
        tables.append(_rich_table(shown, [columns[i] for i in picked], [[row[i] for i in picked] for row in cells],
                                  widths, no_wrap, wrap=(), width=width))
    return tables


def _notes(notes: list[str], width: int) -> list[str]:
    import textwrap

    lines: list[str] = []
    for n, text in enumerate(notes, start=1):
        lines.extend(textwrap.wrap(text, width=width, initial_indent=f"[{n}] ", subsequent_indent="    ",
                                   break_long_words=True, break_on_hyphens=False) or [f"[{n}]"])
    return lines


def _records(title: str, columns: list[str], rows: list[list[str]], width: int) -> list[str]:
    """One block per row, ``column: value`` packed into lines; long values on their own wrapped lines."""
    import textwrap

    lines = [title] if title else []
    for row in rows:
        current = ""
        block: list[str] = []
        for name, value in zip(columns, row):
            if not value:
                continue
            item = f"{name}: {value}"
            if _cell_width(item) > width - 4:  # long: its own lines, wrapped
                if current:
                    block.append(current)
                    current = ""
                block.extend(textwrap.wrap(item, width=width, initial_indent="  ", subsequent_indent="    ",
                                           break_on_hyphens=False))
            elif current and _cell_width(current) + 2 + _cell_width(item) > width:
                block.append(current)
                current = "  " + item
            else:
                current = f"{current}  {item}" if current else "  " + item
        if current:
            block.append(current)
        lines.extend(["", *block] if block else [])
    return lines


def emit(args, doc: Any, human: Callable[[Any], Any]) -> None:
    """``--json``: one JSON document on stdout; otherwise ``human(doc)`` prints it for people."""
    if getattr(args, "json", False):
        if hasattr(doc, "model_dump"):
            doc = doc.model_dump(mode="json", by_alias=True)
        sys.stdout.write(json.dumps(doc, default=str) + "\n")
    else:
        human(doc)


def open_workspace(args):
    """The workspace the command line names (``--workspace``/``--project``, or found from the cwd)."""
    from weightsmith.workspace import Workspace

    return Workspace.open(getattr(args, "workspace", None), project=getattr(args, "project", None))


def local_context(args, workspace=None):
    """The service context of the person at the terminal: every scope, in ``--project`` (``--actor`` names them)."""
    from weightsmith.service import Actor, Context

    ws = workspace or open_workspace(args)
    actor = Actor.local_person(ws.project_name, name=getattr(args, "actor", None))
    return Context(workspace=ws, actor=actor, adapter="cli")


def dump(result) -> object:
    """A service result as the plain JSON-able document the CLI prints (lists of versions stay lists)."""
    return result.model_dump(mode="json", by_alias=True) if hasattr(result, "model_dump") else result
