"""The one rule for the names users give things, checked wherever a name comes in.

Datasets, models, pipeline stages and aliases are referred to as ``NAME``, ``NAME@vN`` or
``NAME@ALIAS`` on the command line and in pipeline and suite YAML, whether they came from
``data add``, a pipeline's ``datasets:`` keys, its ``model:``, its stage names (a ``pairs``
stage's output is a dataset named after the stage) or a registration. So a name is 1 to 100
letters, digits, '_', '-' or '.', starting with a letter or digit: no '@' (it starts a version or
an alias), no '/' (a name would read as a folder), no spaces.
"""

from __future__ import annotations

import re

from weightsmith.errors import UserError, shorten

MAX_NAME_CHARS = 100
NAME_RULE = (
    f"use 1 to {MAX_NAME_CHARS} ASCII letters, digits, '_', '-' or '.', starting with a letter or digit "
    "(no '@', '/' or spaces)"
)
_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_NAME_CHARS - 1}}}")


def is_valid_name(name: object) -> bool:
    """Whether ``name`` follows the rule (see the module's docstring)."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def check_name(name: object, what: str, key: str | None = None) -> str:
    """Return ``name`` when it follows the rule; otherwise raise one sentence naming it.

    Args:
        name: the name as the user gave it (any YAML value: a key may be a number or null).
        what: what it names, for the message ("dataset", "model", "stage", "alias").
        key: where it was given, e.g. ``pipeline.yaml: datasets`` (prefixes the message).

    Raises:
        UserError: e.g. ``p.yaml: datasets: 'a/b' is not a valid dataset name; use 1 to 100 ...``.
    """
    if is_valid_name(name):
        return name  # type: ignore[return-value]
    where = f"{key}: " if key else ""
    text = "" if isinstance(name, str) else " (a name is text: quote it in YAML)"
    raise UserError(f"{where}{shorten(name)} is not a valid {what} name{text}; {NAME_RULE}.")
