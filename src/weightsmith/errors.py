"""Errors a user can cause, and how the edges report them.

Anything raised as :class:`UserError` is bad input: the CLI prints its message as one
sentence and exits 2, and nothing is half-written. Everything else exits 1.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input from a user: one clear sentence naming the file, line or key and what to do."""

    exit_code = 2


class GateRefused(Exception):
    """A gate that ran and refused the candidate (exit code 3)."""

    exit_code = 3


def closest(word: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean 'x'?)' for the closest choice, or '' when none is close."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""
