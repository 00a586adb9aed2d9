"""The embedded state: where a workspace lives, its database and its artifact store.

A workspace is a folder holding ``.weightsmith/`` (like git's ``.git``). It is found from
``--workspace DIR``, else ``WEIGHTSMITH_HOME``, else by walking up from the current directory.
The database is SQLite (WAL) in that folder unless ``WEIGHTSMITH_DATABASE_URL`` or the
workspace's ``workspace.json`` names another SQLAlchemy URL.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.orm import Session, sessionmaker

from weightsmith.errors import UserError
from weightsmith.workspace.models import Project
from weightsmith.workspace.store import ArtifactStore

MARKER = ".weightsmith"
DEFAULT_PROJECT = "default"


def find_workspace_root(explicit: str | os.PathLike | None = None, cwd: Path | None = None) -> Path:
    """Return the folder holding ``.weightsmith/``, or raise a UserError saying how to make one."""
    given = explicit or os.environ.get("WEIGHTSMITH_HOME")
    if given:
        root = Path(given).expanduser().resolve()
        if not (root / MARKER).is_dir():
            raise UserError(f"{root} is not a weightsmith workspace; run 'weightsmith init {root}' first.")
        return root
    here = (cwd or Path.cwd()).resolve()
    for folder in [here, *here.parents]:
        if (folder / MARKER).is_dir():
            return folder
    raise UserError(
        f"no weightsmith workspace in {here} or its parents; run 'weightsmith init' here, "
        "or pass --workspace DIR."
    )


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the worker, a stage subprocess and the CLI read while one writes; the busy
    # timeout makes a writer wait for the lock instead of failing at once.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class Workspace:
    """An opened workspace: engine, sessions, artifact store and the current project."""

    def __init__(self, root: Path, project: str | None = None):
        self.root = Path(root).resolve()
        self.dir = self.root / MARKER
        settings_path = self.dir / "workspace.json"
        self.settings = json.loads(settings_path.read_text()) if settings_path.exists() else {}
        self.database_url = (
            os.environ.get("WEIGHTSMITH_DATABASE_URL")
            or self.settings.get("database_url")
            or f"sqlite:///{self.dir / 'weightsmith.db'}"
        )
        self.engine: Engine = create_engine(self.database_url)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.store = ArtifactStore(self.dir / "artifacts")
        self.project_name = project or os.environ.get("WEIGHTSMITH_PROJECT") or self.settings.get(
            "project", DEFAULT_PROJECT
        )
        self._project_id: int | None = None

    # -- lifecycle ---------------------------------------------------------------------
    @classmethod
    def init(cls, root: Path, database_url: str | None = None) -> Workspace:
        """Create (or upgrade) a workspace in ``root``; safe to run twice."""
        root = Path(root).resolve()
        (root / MARKER).mkdir(parents=True, exist_ok=True)
        settings_path = root / MARKER / "workspace.json"
        if not settings_path.exists():
            settings = {"project": DEFAULT_PROJECT}
            if database_url:
                settings["database_url"] = database_url
            settings_path.write_text(json.dumps(settings, indent=2) + "\n")
        ws = cls(root)
        ws.migrate()
        return ws

    @classmethod
    def open(cls, explicit: str | os.PathLike | None = None, project: str | None = None) -> Workspace:
        ws = cls(find_workspace_root(explicit), project=project)
        ws.migrate()
        return ws

    def migrate(self) -> None:
        """Bring the database schema to the newest Alembic revision."""
        from weightsmith.workspace.migrate import upgrade

        upgrade(self.engine)

    # -- sessions ----------------------------------------------------------------------
    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back if it raises."""
        with self._sessions() as session:
            with session.begin():
                yield session

    @property
    def project_id(self) -> int:
        if self._project_id is None:
            with self.session() as s:
                project = s.scalar(select(Project).where(Project.name == self.project_name))
                if project is None:
                    project = Project(name=self.project_name)
                    s.add(project)
                    s.flush()
                self._project_id = project.id
        return self._project_id

    # -- folders -------------------------------------------------------------------------
    def job_dir(self, job_id: int) -> Path:
        path = self.dir / "jobs" / str(job_id)
        path.mkdir(parents=True, exist_ok=True)
        return path
