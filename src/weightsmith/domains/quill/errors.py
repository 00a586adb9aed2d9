"""The one error a Quill program can raise before it runs: where it went wrong, and why."""

from __future__ import annotations

from weightsmith.errors import UserError


class QuillSyntaxError(UserError):
    """A program that does not parse or does not type-check.

    ``str(err)`` is caret-style: ``"1:14: expected ')' ..."`` followed by the source line and a
    caret under the offending column. ``line`` and ``col`` are 1-based. ``kind`` says which check
    failed: ``syntax``, ``name``, ``arity``, ``type`` or ``window``.
    """

    def __init__(self, message: str, line: int, col: int, source: str = "", kind: str = "syntax"):
        self.message = message
        self.line = line
        self.col = col
        self.kind = kind
        lines = source.splitlines()
        text = f"{line}:{col}: {message}"
        if 1 <= line <= len(lines):
            # Tabs would shift the caret; we show the line with tabs as single spaces.
            shown = lines[line - 1].replace("\t", " ")
            text += f"\n  {shown}\n  {' ' * (col - 1)}^"
        super().__init__(text)
