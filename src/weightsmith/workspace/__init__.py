"""The embedded state: where a workspace lives, its database and its artifact store.

A workspace is a folder holding ``.weightsmith/`` (like git's ``.git``). It is found from
``--workspace DIR``, else ``WEIGHTSMITH_HOME``, else by walking up from the current directory.
The database is SQLite (WAL) in that folder unless ``WEIGHTSMITH_DATABASE_URL`` or the
workspace's ``workspace.json`` names another SQLAlchemy URL.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from weightsmith.errors import UserError
from weightsmith.workspace.models import Project
from weightsmith.workspace.store import ArtifactStore

MARKER = ".weightsmith"
_MIGRATED: set[str] = set()  # database URLs this process has migrated (see Workspace.migrate)
DEFAULT_PROJECT = "default"
# How long a writer waits for another process's write lock before giving up (SQLite's busy timeout).
BUSY_TIMEOUT_MS = 30_000
T = TypeVar("T")


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
    # timeout makes a writer wait for the lock instead of failing at once. It comes first:
    # switching to WAL on a database another process is creating needs the lock too.
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode=WAL")
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
            # Written whole under another name, then linked into place only if still absent: a
            # concurrent `init` (or a command finding the folder) never reads a half-written file.
            staged = settings_path.with_name(f".workspace.json.{os.getpid()}")
            staged.write_text(json.dumps(settings, indent=2) + "\n")
            try:
                os.link(staged, settings_path)
            except FileExistsError:
                pass  # another init wrote it first
            finally:
                staged.unlink()
        ws = cls(root)
        ws.migrate()
        return ws

    @classmethod
    def open(cls, explicit: str | os.PathLike | None = None, project: str | None = None) -> Workspace:
        ws = cls(find_workspace_root(explicit), project=project)
        ws.migrate()
        return ws

    def migrate(self) -> None:
        """Bring the database schema to the newest Alembic revision, once per database and process.

        Every verb opens the workspace; running Alembic on each open cost a migration check per
        call (and per API request), so a process remembers the databases it has brought up to date.
        """
        from weightsmith.workspace.migrate import upgrade

        url = self.engine.url.render_as_string(hide_password=False)
        if url in _MIGRATED:
            return
        upgrade(self.engine)
        _MIGRATED.add(url)

    def for_project(self, project: str) -> Workspace:
        """The same workspace (engine, store, settings) seen from another project.

        The API server opens the workspace once and serves every project's token from it, so the
        engine and its connection pool are shared, not created per request.
        """
        other = object.__new__(Workspace)
        other.__dict__.update(self.__dict__)
        other.project_name = project
        other._project_id = None
        return other

    # -- sessions ----------------------------------------------------------------------
    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back if it raises."""
        with self._sessions() as session:
            with session.begin():
                yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that reads and then writes as one step, serialized with every other writer.

        On SQLite it opens with ``BEGIN IMMEDIATE``: the database's write lock is taken before the
        first read (waiting up to the busy timeout for another process to finish), so a
        read-then-insert ("is there a version with this hash? no: add v2") cannot interleave with a
        concurrent one. Other databases rely on the unique constraints instead: see :meth:`transact`.
        Nothing inside may open another session that writes (it would wait on this one's lock).
        """
        self.project_id  # resolved first: looking it up inside would wait on our own write lock
        with self._write_session() as session:
            yield session

    @contextmanager
    def _write_session(self) -> Iterator[Session]:
        with self._sessions() as session:
            with session.begin():
                if self.engine.dialect.name == "sqlite":
                    session.connection().exec_driver_sql("BEGIN IMMEDIATE")
                yield session

    def transact(self, work: Callable[[Session], T], *, attempts: int = 3) -> T:
        """Run ``work(session)`` in a :meth:`write` transaction; insert-or-get made race-safe.

        ``work`` reads what exists and inserts what does not. When a concurrent caller inserted the
        same unique row first (an ``IntegrityError``: possible where the database does not serialize
        writers, as PostgreSQL under READ COMMITTED), the transaction is rolled back and ``work`` runs
        again from the start, now finding that row, so both callers get the same answer.

        Args:
            work: called with the session; its return value is returned after the commit. It may be
                called up to ``attempts`` times, so it must not have effects outside the session.
            attempts: how many times to run it before the IntegrityError is raised.
        """
        return self._retry_on_conflict(work, self.write, attempts)

    @staticmethod
    def _retry_on_conflict(work: Callable[[Session], T], open_session, attempts: int) -> T:
        for attempt in range(1, attempts + 1):
            try:
                with open_session() as session:
                    return work(session)
            except IntegrityError:
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    @property
    def project_id(self) -> int:
        if self._project_id is None:
            with self.session() as s:  # a read first: read-only verbs need no write lock
                self._project_id = s.scalar(select(Project.id).where(Project.name == self.project_name))
        if self._project_id is None:
            def get_or_create(s: Session) -> int:
                project = s.scalar(select(Project).where(Project.name == self.project_name))
                if project is None:
                    project = Project(name=self.project_name)
                    s.add(project)
                    s.flush()
                return project.id

            self._project_id = self._retry_on_conflict(get_or_create, self._write_session, 3)
        return self._project_id

    # -- folders -------------------------------------------------------------------------
    def job_dir(self, job_id: int) -> Path:
        path = self.dir / "jobs" / str(job_id)
        path.mkdir(parents=True, exist_ok=True)
        return path
