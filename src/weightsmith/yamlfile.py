"""Reading a user's YAML file: every problem is one sentence naming the file (and line:column).

The loader is PyYAML's SafeLoader, plus four refusals: a key given twice in one mapping, aliases
that expand the document far beyond what was written (a "billion laughs": ten aliases of ten
aliases of ... is a few hundred bytes that becomes 10**9 values once anything walks it), an
alias inside its own anchor's value (an infinite document), and nesting deeper than 100 levels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from weightsmith.errors import UserError, shorten


# What aliases may add to a document beyond what it spells out, counted as values (each scalar,
# list and mapping is one) plus the characters of the scalars. A pipeline or suite that reuses a
# block with `<<: *base` or `*name` adds thousands (a 2,000-character prompt named by 100 KPIs,
# 200,000); a billion laughs of "lol"s passes the bound at 5 levels of 10 (4 million), where 6
# levels made a 3.8 MB error message and 9 levels ran out of memory.
MAX_ALIAS_EXPANSION = 1_000_000
# Nesting deeper than this is refused before PyYAML's recursive composer would hit Python's limit.
MAX_DEPTH = 100


class StrictYamlError(yaml.constructor.ConstructorError):
    """YAML that the strict loader refuses; ``problem`` is the sentence to show."""

    valid_yaml = True  # the YAML spec allows it; we refuse it


class DuplicateKeyError(StrictYamlError):
    """A key given twice in one mapping."""

    valid_yaml = False  # the YAML spec forbids it; PyYAML lets it pass


class AliasExpansionError(StrictYamlError):
    """Aliases that make the document far larger than it is written, or infinite."""


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _own_size(node: yaml.Node) -> int:
    return 1 + (len(node.value) if isinstance(node, yaml.ScalarNode) else 0)


def check_alias_expansion(root: yaml.Node, limit: int = MAX_ALIAS_EXPANSION) -> None:
    """Refuse a node graph whose aliases expand it by more than ``limit`` values and characters.

    The graph is what PyYAML composed: an alias is the same node object reached twice, so the
    written size is the sum over distinct nodes, and the expanded size (what a walk of the loaded
    data visits) is computed bottom-up once per distinct node — linear in the written document.

    Raises:
        AliasExpansionError: naming the line of the first value that expands past the bound, or
            of the anchor whose value holds an alias of itself.
    """
    distinct: dict[int, yaml.Node] = {}
    pending = [root]
    while pending:
        node = pending.pop()
        if id(node) not in distinct:
            distinct[id(node)] = node
            pending.extend(_children(node))
    written = sum(_own_size(node) for node in distinct.values())
    expanded: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:  # depth-first, children before parents; on_path holds the current node's ancestors
        node, children_done = stack.pop()
        if children_done:
            on_path.discard(id(node))
            size = _own_size(node) + sum(expanded[id(child)] for child in _children(node))
            if size > written + limit:
                raise AliasExpansionError(
                    None, None,
                    f"its aliases (*name) expand this value to more than {limit:,} values and characters beyond "
                    "what the file spells out; write the repeated part out, or repeat it fewer times",
                    node.start_mark,
                )
            expanded[id(node)] = size
            continue
        if id(node) in expanded:
            continue
        on_path.add(id(node))
        stack.append((node, True))
        for child in _children(node):
            if id(child) in on_path:
                raise AliasExpansionError(
                    None, None, "an alias refers to the value that contains it, which would make it infinite; "
                    "remove that alias", child.start_mark,
                )
            if id(child) not in expanded:
                stack.append((child, False))


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key repeated in one mapping (PyYAML keeps the last one silently),
    nesting deeper than :data:`MAX_DEPTH`, and aliases that expand too far (see the module's docstring)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        # PyYAML composes recursively: a few thousand '[' would end in a RecursionError.
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise StrictYamlError(
                    None, None, f"values are nested more than {MAX_DEPTH} levels deep; flatten them",
                    self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node):
        check_alias_expansion(node)  # before anything is built from the graph
        return super().construct_document(node)

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
                    None, None, f"{shorten(key)} is given twice in one mapping (first on line "
                    f"{first.start_mark.line + 1}); keep one", key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


def load_yaml_text(text: str) -> Any:
    """Parse one YAML document (a command-line value, say) like a file: a repeated key is an error."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader


def describe_yaml_error(exc: yaml.YAMLError, where: str) -> str:
    """One sentence for a YAML error in ``where`` (a file, or a key=value override), with line:column."""
    mark = getattr(exc, "problem_mark", None)
    at = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
    problem = getattr(exc, "problem", None) or str(exc)
    if getattr(exc, "valid_yaml", False):
        return f"{where}{at}: {problem}."
    return f"{where}{at}: not valid YAML ({problem})."


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
        raise UserError(describe_yaml_error(exc, str(path))) from exc
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text.") from exc
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a {what} is a mapping with {shape}.")
    return raw
