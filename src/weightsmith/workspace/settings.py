"""Per-project settings: one JSON value per (project, key), with who set it last.

Keys in use: ``serve.logging`` — ``full`` (default), ``redacted`` or ``off`` (what the request log keeps
of served traffic; see :mod:`weightsmith.serve.log`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from weightsmith.workspace.models import ProjectSetting, utcnow

SERVE_LOGGING = "serve.logging"
LOGGING_MODES = ("full", "redacted", "off")


def get_setting(session, project_id: int, key: str, default: Any = None) -> Any:
    row = session.get(ProjectSetting, (project_id, key))
    return default if row is None else row.value


def settings_for(session, project_ids: list[int], key: str, default: Any = None) -> dict[int, Any]:
    """``key``'s value for each project (one query), ``default`` where unset."""
    found = dict(session.execute(
        select(ProjectSetting.project_id, ProjectSetting.value).where(
            ProjectSetting.key == key, ProjectSetting.project_id.in_(project_ids))).all())
    return {pid: found.get(pid, default) for pid in project_ids}


def set_setting(session, project_id: int, key: str, value: Any, actor: str) -> ProjectSetting:
    row = session.get(ProjectSetting, (project_id, key))
    if row is None:
        row = ProjectSetting(project_id=project_id, key=key, value=value, updated_by=actor, updated_at=utcnow())
        session.add(row)
    else:
        row.value, row.updated_by, row.updated_at = value, actor, utcnow()
    session.flush()
    return row
