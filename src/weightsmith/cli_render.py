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


def table(title: str, columns: list[str], rows: list[list[Any]], *, no_wrap: tuple[str, ...] = ()) -> None:
    """Print a table; cells that are None print empty; columns named in ``no_wrap`` are never broken across lines."""
    from rich.table import Table

    out = Table(title=title, title_justify="left")
    for c in columns:
        out.add_column(c, no_wrap=c in no_wrap)
    for row in rows:
        out.add_row(*["" if v is None else str(v) for v in row])
    console().print(out)


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
