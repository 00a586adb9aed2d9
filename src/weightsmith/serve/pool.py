"""Which version a request names, and the loaded engines: an LRU under a memory limit.

:func:`resolve` turns the ``model`` of a request into a concrete version of the caller's project, per
request, so moving an alias (``weightsmith models promote``) reaches the next request with no restart:
``quill`` means ``quill@champion``, ``quill@ALIAS`` the version the alias names now, ``quill@vN`` that
version. Another project's models do not exist for the caller (404), and a request never names a folder.

:class:`EnginePool` keeps one :class:`~weightsmith.serve.types.Engine` per version folder (versions
are immutable and stored by content hash, so two versions with the same weights share one engine).
A version not loaded yet loads on its first request (other requests for it wait for that one load);
when the loaded engines' ``memory_bytes`` (weights plus a KV cache for a full batch at full context)
add up to more than the limit, the least recently used are evicted — an evicted engine finishes the
requests it holds before it is closed. A version that fails to load (missing or corrupt files) is
refused for :data:`LOAD_RETRY_SECONDS` without reading its folder again, then tried afresh, so a
repaired folder is picked up and a broken one costs one load attempt per back-off, not one per request.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from weightsmith.errors import NotFound, UserError, shorten
from weightsmith.serve.types import Engine
from weightsmith.workspace import Workspace

log = logging.getLogger("weightsmith.serve.pool")

DEFAULT_ALIAS = "champion"
LOAD_RETRY_SECONDS = 15.0
"""How long a version whose folder failed to load is refused before the pool reads the folder again."""
_MODEL_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}(@[A-Za-z0-9][A-Za-z0-9_.-]{0,99})?")


@dataclass(frozen=True)
class Resolved:
    """The concrete version a request's ``model`` names now."""

    requested: str  # as the request named it
    project: str
    project_id: int
    name: str
    version: int
    version_id: int
    path: str

    @property
    def ref(self) -> str:
        """``NAME@vN``: what every response's ``model`` says."""
        return f"{self.name}@v{self.version}"


CLI_LISTING = "'weightsmith models list' shows them"
HTTP_LISTING = "GET /v1/models lists the names this credential may use"


def resolve(ws: Workspace, model: str, *, listing: str = CLI_LISTING) -> Resolved:
    """The version of ``ws``'s project that ``model`` (``NAME``, ``NAME@ALIAS``, ``NAME@vN``) names now.

    ``NAME`` alone is ``NAME@champion``. One indexed query (:func:`~weightsmith.workspace.registry.lookup_version`)
    when the name exists; nothing is cached, so an alias moved a moment ago is followed. ``listing`` ends a
    message about an unknown model: where the caller finds the names (the CLI's ``models list``, or
    :data:`HTTP_LISTING` for a remote client, who has no CLI on the server).

    Raises:
        NotFound: no such model, version or alias in the project (the message names the project and says
            what exists), or a bare name whose model has no champion yet.
    """
    from weightsmith.workspace.registry import lookup_version

    if not _MODEL_REF.fullmatch(model):
        raise NotFound(f"there is no model {shorten(model)}; name one as NAME, NAME@ALIAS or NAME@vN ({listing}).")
    name, _, tag = model.partition("@")
    with ws.session() as s:
        mv = lookup_version(s, ws, model if tag else f"{name}@{DEFAULT_ALIAS}")
        if mv is None:
            _explain_not_found(s, ws, name, tag, listing)
        return Resolved(requested=model, project=ws.project_name, project_id=ws.project_id, name=mv.model.name,
                        version=mv.version, version_id=mv.id, path=mv.path)


def _explain_not_found(s, ws: Workspace, name: str, tag: str, listing: str) -> None:
    """Raise the NotFound that says why ``NAME[@TAG]`` names nothing (the registry's lookups, which may read more)."""
    from weightsmith.workspace.registry import find_version

    try:
        if not tag:
            try:
                find_version(s, ws, f"{name}@{DEFAULT_ALIAS}")
            except NotFound as exc:
                if "no alias" not in str(exc):
                    raise
                newest = find_version(s, ws, name)
                raise NotFound(
                    f"model '{name}' has no {DEFAULT_ALIAS} yet, and a bare name means its {DEFAULT_ALIAS}; name "
                    f"a version ('{name}@v{newest.version}') or another alias, or promote one ('weightsmith "
                    f"models promote {name}@v{newest.version} --alias {DEFAULT_ALIAS}')."
                ) from None
        else:
            find_version(s, ws, f"{name}@{tag}")
    except NotFound as exc:
        message = str(exc)
        if message.startswith("no model named"):  # the registry's words name neither the project nor the API
            message = (f"no model named {shorten(name)} in project '{ws.project_name}'"
                       f"{message[len('no model named ' + shorten(name)):].split(';')[0]}; {listing}.")
        raise NotFound(message) from None
    # the one query found nothing but the registry's lookups did: they disagree (a version registered meanwhile)
    raise NotFound(f"{name}{'@' + tag if tag else ''} changed while it was looked up; retry.")


def parse_size(text: str) -> int:
    """``"8GiB"``, ``"500MB"``, ``"2G"``, ``"1073741824"`` → bytes (K/M/G/T are powers of 1000, Ki/Mi/... of 1024).

    Raises:
        UserError: not a size.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]i?)?[bB]?\s*", text or "")
    if not match:
        raise UserError(f"--memory-limit: {shorten(text)} is not a size; write e.g. 8GiB, 500MB or 2G.")
    number, unit = float(match.group(1)), (match.group(2) or "").lower()
    power = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}[unit[:1]]
    value = int(number * (1024 if unit.endswith("i") else 1000) ** power)
    if value <= 0:
        raise UserError("--memory-limit must be more than 0 bytes.")
    return value


def default_memory_limit() -> int:
    """Half of this machine's physical memory: room for the engines and for everything else."""
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 8 * 1024**3


class LoadFailed(UserError):
    """A version's folder could not be loaded; the pool refuses it for ``retry_after`` more seconds. Its sentence is
    the loader's (a :class:`UserError` that names the folder, for the operator: ``weightsmith serve`` prints it),
    its cause the loader's exception, logged once when it happened; the HTTP answer says less (no server folders)."""

    def __init__(self, ref: str, retry_after: float, cause: BaseException):
        super().__init__(str(cause) if isinstance(cause, UserError)
                         else f"{ref} could not be loaded ({type(cause).__name__}: {cause}).")
        self.ref, self.retry_after = ref, retry_after


@dataclass
class _Entry:
    path: str
    loaded: Future = field(default_factory=Future)
    active: int = 0  # requests holding it (a lease each)
    evicted: bool = False
    versions: set[tuple[str, str]] = field(default_factory=set)  # (project, NAME@vN) served by it
    cache: dict = field(default_factory=dict)  # what the server derives from the engine once (chat renderers)

    @property
    def engine(self) -> Engine | None:
        return self.loaded.result() if self.loaded.done() and self.loaded.exception() is None else None


class Lease:
    """One request's hold on a loaded engine; :meth:`release` it when the request is done (once)."""

    def __init__(self, pool: EnginePool, entry: _Entry, engine: Engine):
        self._pool, self._entry, self.engine = pool, entry, engine
        self.cache = entry.cache  # lives as long as the engine is loaded
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._pool._release(self._entry)


@dataclass(frozen=True)
class LoadedVersion:
    path: str
    engine: Engine
    versions: frozenset[tuple[str, str]]
    active: int


class EnginePool:
    """Loaded engines by version folder, least recently used first out when over ``memory_limit`` bytes.

    Args:
        load: ``load(model_dir) -> Engine`` (e.g. :func:`weightsmith.serve.engine.load_engine` with its options).
        memory_limit: the most bytes (sum of ``engine.memory_bytes``: weights plus KV-cache estimate) kept
            loaded; one engine is always kept, even when it alone is larger.
        load_retry_seconds: how long a version that failed to load is refused (:class:`LoadFailed`) before
            its folder is read again.
    """

    def __init__(self, load: Callable[[Path], Engine], memory_limit: int | None = None, *,
                 load_retry_seconds: float = LOAD_RETRY_SECONDS):
        self._load = load
        self.memory_limit = memory_limit if memory_limit is not None else default_memory_limit()
        self.load_retry_seconds = load_retry_seconds
        self._failures: dict[str, tuple[float, BaseException]] = {}  # path -> (refused until, the load's exception)
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._closed = False

    def lease(self, resolved: Resolved) -> Lease:
        """The engine of ``resolved``'s version, loading it first if needed (blocks while loading).

        Raises:
            UserError: the pool is closing (the server is shutting down).
            LoadFailed: loading the version failed now or less than ``load_retry_seconds`` ago (its cause is
                the loader's exception).
        """
        with self._lock:
            if self._closed:
                raise UserError("the server is shutting down.")
            failed = self._failures.get(resolved.path)
            if failed is not None:
                left = failed[0] - time.monotonic()
                if left > 0:
                    raise LoadFailed(resolved.ref, left, failed[1]) from failed[1]
                del self._failures[resolved.path]
            entry = self._entries.get(resolved.path)
            loader = entry is None
            if loader:
                entry = self._entries[resolved.path] = _Entry(resolved.path)
            entry.active += 1
            entry.versions.add((resolved.project, resolved.ref))
            self._entries.move_to_end(resolved.path)
        if loader:
            try:
                engine = self._load(Path(resolved.path))
            except BaseException as exc:
                error = self._remember_failure(resolved, exc) if isinstance(exc, Exception) else exc
                entry.loaded.set_exception(error)
                with self._lock:
                    if self._entries.get(resolved.path) is entry:
                        del self._entries[resolved.path]
                    entry.active -= 1
                if error is exc:
                    raise
                raise error from exc
            entry.loaded.set_result(engine)
            log.info("loaded %s (%s bytes)", resolved.ref, f"{engine.memory_bytes:,}")
            self._evict_over_limit()
        try:
            engine = entry.loaded.result()
        except BaseException:
            with self._lock:
                entry.active -= 1
            raise
        return Lease(self, entry, engine)

    def loaded(self) -> list[LoadedVersion]:
        """The engines loaded now, least recently used first."""
        with self._lock:  # the version sets too: a lease adds to them (a scrape iterating one would fail)
            return [LoadedVersion(e.path, e.engine, frozenset(e.versions), e.active)
                    for e in self._entries.values() if e.engine is not None]

    def memory_bytes(self) -> int:
        return sum(v.engine.memory_bytes for v in self.loaded())

    def close(self, drain: bool = True) -> None:
        """Close every engine (``drain``: finish what each holds first); later leases are refused."""
        with self._lock:
            self._closed = True
            entries = list(self._entries.values())
            self._entries.clear()
        for entry in entries:
            engine = entry.engine
            if engine is not None:
                engine.close(drain=drain)

    # -- internals ------------------------------------------------------------------------------
    def _remember_failure(self, resolved: Resolved, exc: Exception) -> LoadFailed:
        # A UserError is already the sentence that says why; anything else is a surprise, worth its traceback.
        log.error("cannot load %s; refusing it for %.0f s before trying its folder again: %s", resolved.ref,
                  self.load_retry_seconds, exc, exc_info=None if isinstance(exc, UserError) else exc)
        with self._lock:
            self._failures[resolved.path] = (time.monotonic() + self.load_retry_seconds, exc)
        error = LoadFailed(resolved.ref, self.load_retry_seconds, exc)
        error.__cause__ = exc
        return error

    def _release(self, entry: _Entry) -> None:
        with self._lock:
            entry.active -= 1
            close_now = entry.evicted and entry.active == 0
        if close_now:
            self._close_in_background(entry)

    def _evict_over_limit(self) -> None:
        to_close = []
        with self._lock:
            loaded = [e for e in self._entries.values() if e.engine is not None]
            total = sum(e.engine.memory_bytes for e in loaded)
            while total > self.memory_limit and len(loaded) > 1:
                victim = loaded.pop(0)  # least recently used
                total -= victim.engine.memory_bytes
                victim.evicted = True
                del self._entries[victim.path]
                log.info("evicted %s to stay under %s bytes", sorted(v for _, v in victim.versions), f"{self.memory_limit:,}")
                if victim.active == 0:
                    to_close.append(victim)
        for victim in to_close:
            self._close_in_background(victim)

    @staticmethod
    def _close_in_background(entry: _Entry) -> None:
        engine = entry.engine
        if engine is not None:
            threading.Thread(target=engine.close, kwargs={"drain": True}, name="weightsmith-engine-close",
                             daemon=True).start()
