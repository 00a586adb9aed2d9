"""Quill tokens: names, numbers, punctuation and line ends, each with its line and column."""

from __future__ import annotations

import re
from dataclasses import dataclass

from weightsmith.domains.quill.errors import QuillSyntaxError

KEYWORDS = frozenset({"signal", "filter", "portfolio", "and", "or", "not"})

# Longest first, so that '>=' wins over '>'.
PUNCTUATION = ("==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "(", ")", ",", "=")

_NUMBER = re.compile(r"(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DIGITS = frozenset("0123456789")


@dataclass(frozen=True)
class Token:
    kind: str  # "name" | "keyword" | "number" | "op" | "newline" | "eof"
    text: str
    line: int
    col: int

    def describe(self) -> str:
        """How an error message names this token."""
        if self.kind == "eof":
            return "the end of the program"
        if self.kind == "newline":
            return "the end of the line"
        return f"'{self.text}'"


def tokenize(source: str) -> list[Token]:
    """Split ``source`` into tokens; line ends inside parentheses are dropped (implicit joining)."""
    tokens: list[Token] = []
    depth = 0
    for line_no, line in enumerate(source.splitlines() or [""], start=1):
        pos = 0
        while pos < len(line):
            ch = line[pos]
            col = pos + 1
            if ch in " \t\r":
                pos += 1
                continue
            if ch == "#":
                break
            # ASCII only: 'α' or '²' pass str.isalpha/isdigit but no Quill token starts with them.
            if ch in _DIGITS or (ch == "." and pos + 1 < len(line) and line[pos + 1] in _DIGITS):
                match = _NUMBER.match(line, pos)
                end = match.end()
                if end < len(line) and (line[end].isalpha() or line[end] == "_"):
                    raise QuillSyntaxError(
                        f"malformed number '{line[pos:end + 1]}'", line_no, col, source
                    )
                tokens.append(Token("number", match.group(0), line_no, col))
                pos = end
                continue
            if (ch.isascii() and ch.isalpha()) or ch == "_":
                text = _NAME.match(line, pos).group(0)
                kind = "keyword" if text in KEYWORDS else "name"
                tokens.append(Token(kind, text, line_no, col))
                pos += len(text)
                continue
            for punct in PUNCTUATION:
                if line.startswith(punct, pos):
                    tokens.append(Token("op", punct, line_no, col))
                    depth += {"(": 1, ")": -1}.get(punct, 0)
                    pos += len(punct)
                    break
            else:
                hint = " (Quill writes 'a ? b : c' as if_else(a, b, c))" if ch in "?:" else ""
                hint = " (use 'and', 'or', 'not')" if ch in "&|!" else hint
                raise QuillSyntaxError(f"unexpected character '{ch}'{hint}", line_no, col, source)
        if depth <= 0:
            depth = 0  # a stray ')' is the parser's to report; do not let it swallow newlines
            tokens.append(Token("newline", "", line_no, len(line) + 1))
    last_line = max(1, len(source.splitlines()))
    last_col = len(source.splitlines()[-1]) + 1 if source.splitlines() else 1
    tokens.append(Token("eof", "", last_line, last_col))
    return tokens
