"""Registry aliases: movable names (``champion``, ``candidate``, any name) over immutable versions.

An alias moves only through :func:`promote`, which needs a passing gate of the candidate
against the alias's current holder (on the alias's suite), unless forced — and a forced move
is recorded with who forced it and why. :func:`rollback` moves it back to the holder before.
Every move is kept in ``model_alias_moves``; the current holder is the ``model_aliases`` row.

Rollback undoes promotions like a stack: after v1 → v2 → v3, one rollback gives v2 and a
second gives v1 (it never bounces back to v3).
"""

from __future__ import annotations

import getpass
import os
import re
from typing import Any

from sqlalchemy import select

from weightsmith.errors import NotFound, UserError, closest, shorten
from weightsmith.names import check_name
from weightsmith.workspace import Workspace
from weightsmith.workspace.models import AliasMove, Gate, Model, ModelAlias, ModelVersion, utcnow

_ALIAS_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,99}")
_VERSION_TAG = re.compile(r"v?\d+")


def is_version_tag(tag: str) -> bool:
    """``""``, ``latest``, ``vN`` and ``N`` name versions; anything else after ``@`` names an alias."""
    return tag in ("", "latest") or bool(_VERSION_TAG.fullmatch(tag))


def check_alias_name(alias: str) -> None:
    """The shared name rule (:mod:`weightsmith.names`), and: it starts with a letter and is no version tag."""
    check_name(alias, "alias")
    if is_version_tag(alias) or not _ALIAS_NAME.fullmatch(alias):
        raise UserError(
            f"{shorten(alias)} cannot be an alias: start with a letter, use letters, digits, '_', '-' or '.', "
            "and not vN or 'latest' (those name versions)."
        )


def default_actor() -> str:
    """Who is moving an alias: WEIGHTSMITH_ACTOR (agents and CI set it), else the login name."""
    actor = os.environ.get("WEIGHTSMITH_ACTOR")
    if actor:
        return actor
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in some containers
        return "unknown"


def _ref(mv: ModelVersion | None) -> str | None:
    return f"{mv.model.name}@v{mv.version}" if mv is not None else None


def alias_row(s, model: Model, alias: str) -> ModelAlias | None:
    return s.scalar(select(ModelAlias).where(ModelAlias.model_id == model.id, ModelAlias.name == alias))


def alias_target(s, model: Model, alias: str) -> ModelVersion | None:
    """The version ``alias`` names now, or None when the model has no such alias."""
    row = alias_row(s, model, alias)
    return s.get(ModelVersion, row.model_version_id) if row is not None else None


def alias_names(s, model: Model) -> list[str]:
    return list(s.scalars(select(ModelAlias.name).where(ModelAlias.model_id == model.id).order_by(ModelAlias.name)))


def aliases_of(s, mv: ModelVersion) -> list[str]:
    """The aliases that name this version now."""
    return list(
        s.scalars(select(ModelAlias.name).where(ModelAlias.model_version_id == mv.id).order_by(ModelAlias.name))
    )


def _model(s, ws: Workspace, name: str) -> Model:
    model = s.scalar(select(Model).where(Model.project_id == ws.project_id, Model.name == name))
    if model is None:
        known = s.scalars(select(Model.name).where(Model.project_id == ws.project_id)).all()
        raise NotFound(f"no model named {shorten(name)}{closest(name, known)}; 'weightsmith models list' shows them.")
    return model


def _qualifying_gate(s, mv: ModelVersion, row: ModelAlias | None) -> tuple[Gate | None, str]:
    """The newest passing gate that lets ``mv`` take the alias, and, when there is none, why not."""
    gates = s.scalars(select(Gate).where(Gate.candidate_version_id == mv.id).order_by(Gate.id.desc())).all()
    if not gates:
        return None, "it has not been through a gate"
    passing = [g for g in gates if g.passed]
    if not passing:
        return None, f"its latest gate, #{gates[0].id}, refused it"
    if row is None:
        return passing[0], ""  # a first holder: any passing gate (floors only, typically) crowns it
    why = ""
    for gate in passing:
        if gate.baseline_version_id != row.model_version_id:
            compared = _ref(s.get(ModelVersion, gate.baseline_version_id)) if gate.baseline_version_id else "floors only"
            why = why or f"its passing gate #{gate.id} compared it with {compared}, not with the current holder"
            continue
        if row.suite_name and gate.suite_name != row.suite_name:
            why = why or f"its passing gate #{gate.id} ran suite '{gate.suite_name}', but this alias is gated by '{row.suite_name}'"
            continue
        return gate, ""
    return None, why


def promote(
    ws: Workspace, ref: str, alias: str, *, force: bool = False, reason: str | None = None, actor: str | None = None
) -> dict[str, Any]:
    """Point ``alias`` at the version ``ref`` names, if a passing gate allows it (or ``force``).

    Args:
        ref: ``NAME@vN`` (or anything :func:`weightsmith.workspace.registry.find_version` takes).
        alias: the alias of that model to move, e.g. ``champion``.
        force: move it without a qualifying gate; needs ``reason``, and is recorded as forced.
        reason: why (kept with the move; required when forcing).
        actor: who (default: WEIGHTSMITH_ACTOR or the login name).

    Returns:
        ``{"model", "alias", "version" (NAME@vN), "previous", "moved", "forced", "gate", "actor", "reason", "move"}``.

    Raises:
        UserError: no qualifying gate and not forced — saying which gate to run.
    """
    from weightsmith.workspace.registry import find_version

    check_alias_name(alias)
    if force and not (reason and reason.strip()):
        raise UserError("a forced promotion needs --reason '...': it is recorded with who forced it and why.")
    actor = actor or default_actor()

    def move_alias(s) -> dict[str, Any]:  # one write transaction: concurrent promotions serialize
        mv = find_version(s, ws, ref)
        row = alias_row(s, mv.model, alias)
        previous = s.get(ModelVersion, row.model_version_id) if row is not None else None
        out = {"model": mv.model.name, "alias": alias, "version": _ref(mv), "previous": _ref(previous)}
        if previous is not None and previous.id == mv.id:
            return {**out, "moved": False, "forced": False, "gate": None, "actor": actor, "reason": reason, "move": None}
        gate, why_not = _qualifying_gate(s, mv, row)
        if gate is None and not force:
            holder = f"{mv.model.name}@{alias} ({_ref(previous)})" if previous else f"{mv.model.name}@{alias}"
            raise UserError(
                f"refusing to promote {_ref(mv)} to '{alias}': {why_not}. Run "
                f"'weightsmith gate SUITE --candidate {_ref(mv)} --baseline {mv.model.name}@{alias}' and promote "
                f"if it passes against {holder}, or use --force --reason '...' (recorded with who and why)."
            )
        if row is None:
            row = ModelAlias(model_id=mv.model.id, name=alias, model_version_id=mv.id)
            s.add(row)
        row.model_version_id = mv.id
        row.updated_at = utcnow()
        if gate is not None:
            row.suite_name = gate.suite_name
        s.flush()
        move = AliasMove(
            alias_id=row.id, action="promote", from_version_id=previous.id if previous else None, to_version_id=mv.id,
            gate_id=gate.id if gate else None, forced=gate is None, actor=actor, reason=reason,
        )
        s.add(move)
        s.flush()
        return {**out, "moved": True, "forced": move.forced, "gate": move.gate_id, "actor": actor, "reason": reason, "move": move.id}

    return ws.transact(move_alias)


def rollback(
    ws: Workspace, model_name: str, alias: str, *, reason: str | None = None, actor: str | None = None
) -> dict[str, Any]:
    """Move ``alias`` back to the version that held it before the latest promotion still in effect.

    Returns:
        ``{"model", "alias", "version" (the holder now), "previous" (the one rolled back), "actor", "reason", "move"}``.
    """
    actor = actor or default_actor()

    def move_back(s) -> dict[str, Any]:  # one write transaction: two rollbacks undo two promotions
        model = _model(s, ws, model_name)
        row = alias_row(s, model, alias)
        if row is None:
            known = alias_names(s, model)
            raise NotFound(
                f"model {shorten(model_name)} has no alias {shorten(alias)}{closest(alias, known)}"
                f"{'; it has: ' + ', '.join(known) if known else ''}."
            )
        moves = s.scalars(select(AliasMove).where(AliasMove.alias_id == row.id).order_by(AliasMove.id)).all()
        holders: list[int] = []
        for m in moves:
            if m.action == "promote":
                holders.append(m.to_version_id)
            elif holders:
                holders.pop()
        current = s.get(ModelVersion, row.model_version_id)
        if len(holders) < 2:
            raise UserError(
                f"{model_name}@{alias} has no earlier holder to roll back to ({_ref(current)} is the first); "
                f"promote another version instead."
            )
        before = s.get(ModelVersion, holders[-2])
        row.model_version_id = before.id
        row.updated_at = utcnow()
        move = AliasMove(
            alias_id=row.id, action="rollback", from_version_id=current.id, to_version_id=before.id,
            forced=False, actor=actor, reason=reason,
        )
        s.add(move)
        s.flush()
        return {
            "model": model_name, "alias": alias, "version": _ref(before), "previous": _ref(current),
            "actor": actor, "reason": reason, "move": move.id,
        }

    return ws.transact(move_back)


def list_aliases(ws: Workspace, model_name: str) -> dict[str, Any]:
    """A model's aliases, each with its holder and every move (oldest first)."""
    with ws.session() as s:
        model = _model(s, ws, model_name)
        rows = s.scalars(select(ModelAlias).where(ModelAlias.model_id == model.id).order_by(ModelAlias.name)).all()
        out = []
        for row in rows:
            moves = s.scalars(select(AliasMove).where(AliasMove.alias_id == row.id).order_by(AliasMove.id)).all()
            out.append({
                "alias": row.name,
                "version": _ref(s.get(ModelVersion, row.model_version_id)),
                "suite": row.suite_name,
                "updated_at": row.updated_at.isoformat(timespec="seconds") + "Z",
                "moves": [
                    {
                        "move": m.id, "action": m.action,
                        "from": _ref(s.get(ModelVersion, m.from_version_id)) if m.from_version_id else None,
                        "to": _ref(s.get(ModelVersion, m.to_version_id)), "gate": m.gate_id, "forced": m.forced,
                        "actor": m.actor, "reason": m.reason, "at": m.created_at.isoformat(timespec="seconds") + "Z",
                    }
                    for m in moves
                ],
            })
        return {"model": model_name, "aliases": out}
