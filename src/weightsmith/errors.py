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


# -- the typed errors of the service layer (weightsmith.service) --------------------------------
# Each is a UserError, so the CLI keeps exiting 2 with its sentence; the REST API and the MCP
# server map the class to their own codes (404, 403, 401, 409; a tool error naming the kind).


class NotFound(UserError):
    """The thing named does not exist in the caller's project (another project's things are NotFound too)."""


class Unauthorized(UserError):
    """No credentials, or a token that is unknown or revoked."""


class Forbidden(UserError):
    """The caller is known but lacks the scope the verb needs."""


class Conflict(UserError):
    """The request cannot be done in the current state (e.g. the same idempotency key still in flight)."""


# -- user values in messages --------------------------------------------------------------------
def _bounded_repr():
    import reprlib

    short = reprlib.Repr()
    short.maxlevel, short.maxdict, short.maxlist, short.maxtuple, short.maxset = 2, 4, 4, 4, 4
    short.maxstring = short.maxother = short.maxlong = 120
    return short


_SHORT_REPR = _bounded_repr()


def shorten(value: object, limit: int = 80) -> str:
    """A user's value for a message: its repr, at most about ``limit`` characters.

    A message names the value it refuses, but the value may be a megabyte string or a YAML
    structure of millions of items; ``reprlib`` builds only the part that is shown, and a long
    string says how long it was, e.g. ``'aaaa…' (300 characters)``.
    """
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}… ({len(value)} characters)"
    text = _SHORT_REPR.repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def describe_unexpected(exc: BaseException, limit: int = 300) -> str:
    """One line for an error that is not the user's fault, as the edges print it (exit 1).

    Never SQL or its parameters: SQLAlchemy's own message carries the statement and the values
    bound to it (a user's data), so a database error is told by its driver's first line only, and
    a lock held past the busy timeout or a lost insert race as what to do about it. Never more
    than about ``limit`` characters either.
    """
    from sqlalchemy.exc import IntegrityError, OperationalError, StatementError

    if isinstance(exc, StatementError):
        orig = getattr(exc, "orig", None)
        driver = (str(orig) if orig is not None else type(exc).__name__).strip().splitlines()
        first = clip(driver[0] if driver else type(exc).__name__, limit)
        if isinstance(exc, OperationalError) and ("locked" in first or "busy" in first):
            return (
                "the workspace database stayed locked by another weightsmith process for longer than the busy "
                "timeout; run the command again when that process has finished writing"
            )
        if isinstance(exc, IntegrityError):
            return f"a concurrent change to the workspace conflicted with this one ({first}); run the command again"
        return f"database error ({type(orig or exc).__name__}: {first})"
    return f"{type(exc).__name__}: {clip(str(exc), limit)}"


def clip(text: str, limit: int = 80) -> str:
    """``text`` (a key path, a message) cut to ``limit`` characters, saying how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"
