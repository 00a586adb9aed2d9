"""Who is calling, in which project, and where progress goes: the ``ctx`` of every verb.

Every adapter builds a :class:`Context` and hands it to the verbs. The CLI's caller is the local
person, with every scope, in the project named by ``--project`` (the workspace's default
otherwise). A REST or MCP caller is a project token: its project is the token's, its scopes the
token's, and it is *remote* — a remote caller may never name a path on the server (data arrives as
uploads, models as registry refs or folders under the operator's allow-list).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from weightsmith.errors import Forbidden, UserError
from weightsmith.workspace import Workspace

SCOPES = ("read", "train", "promote", "serve", "admin")
"""What a token may do. ``read``: list and show; ``train``: add data, submit pipelines, evals and
gates, cancel and retry jobs; ``promote``: move aliases; ``serve``: call the served models;
``admin``: everything, including tokens and the audit log."""

Adapter = Literal["cli", "api", "mcp", "python"]
EventSink = Callable[[str, dict[str, Any]], None]


def _ignore(_event: str, _data: dict[str, Any]) -> None:
    """The default event sink: progress goes nowhere."""


@dataclass(frozen=True)
class Actor:
    """The caller: the local person (``kind='person'``) or a project token (``kind='token'``)."""

    name: str
    kind: Literal["person", "token"]
    project: str
    scopes: frozenset[str]
    token_id: int | None = None
    remote: bool = False

    @classmethod
    def local_person(cls, project: str, name: str | None = None) -> Actor:
        """Whoever runs the CLI or the Python API on this machine: every scope, paths allowed."""
        from weightsmith.workspace.aliases import default_actor

        return cls(name=name or default_actor(), kind="person", project=project, scopes=frozenset(SCOPES))

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    def require(self, scope: str, verb: str) -> None:
        """Raise :class:`Forbidden` unless the actor holds ``scope`` (or ``admin``)."""
        if not self.allows(scope):
            raise Forbidden(
                f"'{verb}' needs the '{scope}' scope; token '{self.name}' has {', '.join(sorted(self.scopes)) or 'none'}. "
                f"Ask an admin for a token with it ('weightsmith tokens create --project {self.project} --scope {scope} ...')."
            )


@dataclass
class Context:
    """``ctx``: the workspace seen from the actor's project, the actor, the adapter and an event sink.

    Args:
        workspace: the opened workspace; verbs read ``workspace.project_id`` for tenancy, so it must
            be the actor's project (use :meth:`for_actor`).
        actor: who calls.
        adapter: which adapter built the context (kept in the audit log).
        events: ``events(kind, data)`` receives progress (a stage started, a log line, a metric);
            the CLI prints it, the API streams it, the MCP server sends it as notifications.
        model_dirs: folders a remote caller may name as local models (the operator's allow-list).
    """

    workspace: Workspace
    actor: Actor
    adapter: Adapter = "python"
    events: EventSink = _ignore
    model_dirs: tuple[Path, ...] = field(default_factory=tuple)

    @classmethod
    def for_actor(cls, workspace: Workspace, actor: Actor, **kwargs: Any) -> Context:
        ws = workspace if workspace.project_name == actor.project else workspace.for_project(actor.project)
        return cls(workspace=ws, actor=actor, **kwargs)

    @classmethod
    def local(cls, workspace: Workspace, adapter: Adapter = "python", **kwargs: Any) -> Context:
        """The local person in the workspace's current project."""
        return cls(workspace=workspace, actor=Actor.local_person(workspace.project_name), adapter=adapter, **kwargs)

    def emit(self, event: str, **data: Any) -> None:
        self.events(event, data)

    def public(self, doc: Any) -> Any:
        """``doc`` as this caller may see it: a remote caller is not told where the server keeps things.

        Drops ``path`` and ``output_dir`` keys and blanks ``source`` values that are server paths, at any depth.
        """
        if not self.actor.remote:
            return doc
        return _without_paths(doc)

    def refuse_code(self, value: Any, key: str) -> None:
        """A remote caller names registered rewards and metrics only, never ``module:function`` code to import.

        Raises:
            Forbidden: ``value`` (a name or a list of names) names a Python object to import.
        """
        if not self.actor.remote:
            return
        for name in value if isinstance(value, list) else [value]:
            if isinstance(name, str) and ":" in name:
                raise Forbidden(
                    f"{key}: a remote client names registered rewards and metrics (e.g. exact_match), not code to "
                    f"import ('{_short(name)}'); an operator registers functions with @weightsmith.rewards.reward."
                )

    def local_path(self, value: str, key: str) -> Path:
        """A path the caller named, as a Path — refused for a remote caller (they never name server paths).

        Raises:
            UserError: a remote caller named a path (``key`` says where), or the path is outside the
                operator's allow-list.
        """
        path = Path(value).expanduser()
        if not self.actor.remote:
            return path
        resolved = path.resolve()
        for allowed in self.model_dirs:
            if resolved == allowed or allowed in resolved.parents:
                return resolved
        raise UserError(
            f"{key}: a remote client cannot name a path on the server ('{_short(value)}'); upload data as a "
            "dataset and name models by registry ref (NAME@vN or NAME@ALIAS)."
        )


def _without_paths(doc: Any) -> Any:
    if isinstance(doc, dict):
        out = {}
        for k, v in doc.items():
            if k in ("path", "output_dir", "log", "suite_path"):
                continue
            if k == "source" and isinstance(v, str) and v.startswith(("/", "~")):
                v = None
            out[k] = _without_paths(v)
        return out
    if isinstance(doc, list):
        return [_without_paths(v) for v in doc]
    return doc


def _short(value: str, limit: int = 80) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def model_dirs_from_env() -> tuple[Path, ...]:
    """The operator's allow-list of model folders remote callers may name (``WEIGHTSMITH_MODEL_DIRS``, ':'-separated)."""
    raw = os.environ.get("WEIGHTSMITH_MODEL_DIRS", "")
    return tuple(Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip())
