"""Reading a user's YAML file: every problem is one sentence naming the file (and line:column)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from weightsmith.errors import UserError


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A key given twice in one mapping."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key repeated in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden by the keys beside it
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key: let PyYAML report it
                continue
            if first is not key_node:
                raise DuplicateKeyError(
                    None, None, f"'{key_node.value}' is given twice in one mapping (first on line "
                    f"{first.start_mark.line + 1}); keep one", key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


def load_yaml_text(text: str) -> Any:
    """Parse one YAML document (a command-line value, say) like a file: a repeated key is an error."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader


def load_yaml_mapping(path: Path, what: str, shape: str) -> dict[str, Any]:
    """Parse ``path`` as a YAML mapping.

    Args:
        path: the file.
        what: what the file is, for messages ("pipeline", "suite").
        shape: what the mapping must hold, for the message when it is not one ("'name' and 'stages'").
    """
    if not path.is_file():
        raise UserError(f"{what} file '{path}' does not exist.")
    try:
        raw = load_yaml_text(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise UserError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)}).") from exc
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text.") from exc
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a {what} is a mapping with {shape}.")
    return raw
