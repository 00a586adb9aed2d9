"""The request log: every served request and response, written in batches off the request path.

A request handler only calls :meth:`RequestLog.record`, which appends to an in-memory list and returns:
no database round trip is ever added to serving. One background thread writes what has accumulated
every ``flush_interval`` seconds in one transaction (an ``executemany`` insert), and :meth:`RequestLog.close`
writes the rest when the server shuts down.

What is kept follows the project's ``serve.logging`` setting (:mod:`weightsmith.workspace.settings`),
read by the writer at write time, so changing it takes effect within one flush and no request pays
for reading it:

- ``full`` (default): messages or prompt, every choice's text and token ids, the prompt's token ids;
- ``redacted``: the roles of the messages, counts, finish reasons and timings — no text, no token ids;
- ``off``: nothing.

The query helpers below (:func:`list_requests`, :func:`get_request`, :func:`feedback_for`,
:func:`window`) are what the ``traffic.*`` verbs read; each sees one project only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select

from weightsmith.workspace import Workspace
from weightsmith.workspace.models import RequestFeedback, RequestLogEntry
from weightsmith.workspace.settings import SERVE_LOGGING, settings_for

log = logging.getLogger("weightsmith.serve.log")


@dataclass
class LoggedRequest:
    """One finished (or abandoned) request, as the server hands it to :meth:`RequestLog.record`.

    Times are seconds; ``created_at`` is naive UTC, when the request arrived. ``choices`` are
    ``{"index", "text", "finish_reason", "token_ids"}``; ``prompt`` is the completions endpoint's prompt
    (a string or token ids, or a list of those), ``messages`` the chat endpoint's.
    """

    request_id: str
    project_id: int
    created_at: datetime
    token_name: str | None
    endpoint: str
    model: str
    model_name: str
    model_version_id: int | None
    version: str
    messages: list[dict[str, Any]] | None = None
    prompt: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    choices: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None
    status: str = "ok"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_token_ids: list[Any] | None = None
    time_to_first_token: float | None = None
    total_seconds: float = 0.0


def redact(row: dict[str, Any]) -> dict[str, Any]:
    """The row without content: message roles, counts, finish reasons and timings stay (stop strings are the
    caller's text too: only how many there were stays)."""
    out = dict(row)
    if out.get("messages") is not None:
        out["messages"] = [{"role": m.get("role")} for m in out["messages"]]
    if (out.get("params") or {}).get("stop"):
        out["params"] = {**out["params"], "stop": ["[redacted]"] * len(out["params"]["stop"])}
    out["prompt"] = None
    out["prompt_token_ids"] = None
    out["choices"] = [{"index": c.get("index"), "finish_reason": c.get("finish_reason"),
                       "completion_tokens": len(c.get("token_ids") or [])} for c in out.get("choices") or []]
    out["redacted"] = True
    return out


class RequestLog:
    """The background writer of the request log.

    Args:
        workspace: the workspace whose database holds the log (rows carry their own project id).
        flush_interval: seconds between writes; a row is in the database at most about this long
            after its request ended (plus the write itself).
        max_pending: rows held in memory while the database is unavailable; beyond that new rows are
            dropped (and counted in :attr:`dropped`), never blocking serving.
        max_pending_bytes: the same bound in (estimated) bytes: a row holds its prompt's and its answers'
            token ids and text, so a long context makes a row megabytes, and a row count alone does not
            bound the memory of a server whose database is locked (see :func:`_row_bytes`).
    """

    def __init__(self, workspace: Workspace, *, flush_interval: float = 0.5, max_pending: int = 100_000,
                 max_pending_bytes: int = 256 * 1024**2):
        self.workspace = workspace
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self.dropped = 0
        self.pending_bytes = 0
        self._pending: list[dict[str, Any]] = []
        self._pending_costs: list[int] = []  # _row_bytes of each pending row, in the same order
        self._recorded = 0  # rows handed to record(), dropped ones excepted
        self._done = 0  # rows written (or skipped by the project's setting)
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="weightsmith-request-log", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def record(self, entry: LoggedRequest) -> None:
        """Queue one request for the next write; returns at once (never touches the database)."""
        cost, row = _row_bytes(entry), asdict(entry)  # the copy outside the lock: the writer takes it too
        with self._cond:
            if len(self._pending) >= self.max_pending or self.pending_bytes + cost > self.max_pending_bytes:
                self.dropped += 1
                if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                    log.error("request log: %d request(s) dropped: the database has not taken the %d pending ones "
                              "(%s bytes) yet", self.dropped, len(self._pending), f"{self.pending_bytes:,}")
                return
            self._pending.append(row)
            self._pending_costs.append(cost)
            self.pending_bytes += cost
            self._recorded += 1
            if len(self._pending) >= 512:
                self._cond.notify_all()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every row recorded before this call is written; False when ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._recorded
            self._cond.notify_all()
            while self._done < target:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Write what is pending and stop the writer (the server's shutdown calls it)."""
        self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)

    # -- the writer thread ---------------------------------------------------------------------
    def _run(self) -> None:
        failures = 0
        while True:
            with self._cond:
                if not self._pending and not self._closing:
                    self._cond.wait(self.flush_interval)
                if self._closing and not self._pending:
                    return
                batch = self._pending[:2048]
            if not batch:
                continue
            try:
                self._write(batch)
                failures = 0
            except Exception as exc:  # the database is locked or gone: keep the rows, try again soon
                failures += 1
                log.warning("request log: writing %d rows failed (%s); retrying", len(batch), type(exc).__name__)
                if self._closing and failures >= 3:
                    with self._cond:
                        self._forget(len(batch))
                    log.error("request log: %d rows could not be written at shutdown", len(batch))
                time.sleep(min(0.2 * failures, 5.0))
                continue
            with self._cond:
                self._forget(len(batch))
            if not self._closing:
                time.sleep(self.flush_interval / 4)  # let a burst gather into one transaction

    def _forget(self, rows: int) -> None:
        """The first ``rows`` pending rows are done (written, or given up on at shutdown); the lock is held."""
        del self._pending[:rows]
        self.pending_bytes -= sum(self._pending_costs[:rows])
        del self._pending_costs[:rows]
        self._done += rows
        self._cond.notify_all()

    def _write(self, batch: list[dict[str, Any]]) -> None:
        with self.workspace.session() as s:
            modes = settings_for(s, sorted({row["project_id"] for row in batch}), SERVE_LOGGING, "full")
            rows = []
            for row in batch:
                mode = modes[row["project_id"]]
                if mode == "off":
                    continue
                rows.append(redact(row) if mode == "redacted" else {**row, "redacted": False})
            if rows:
                s.execute(insert(RequestLogEntry), rows)


def _row_bytes(entry: LoggedRequest) -> int:
    """About how many bytes of memory a pending row holds: a kilobyte of fields, and per prompt or answer token
    its id in a list (a pointer and often an int object) and its text, 64 bytes being a generous mean."""
    return 1024 + 64 * (entry.prompt_tokens + entry.completion_tokens)


# -- reading the log (the traffic.* verbs) ---------------------------------------------------
def _filtered(ws: Workspace, *, model: str | None = None, version: str | None = None,
              since: datetime | None = None, until: datetime | None = None):
    query = select(RequestLogEntry).where(RequestLogEntry.project_id == ws.project_id)
    if model:
        query = query.where(RequestLogEntry.model_name == model)
    if version:
        query = query.where(RequestLogEntry.version == version)
    if since:
        query = query.where(RequestLogEntry.created_at >= since)
    if until:
        query = query.where(RequestLogEntry.created_at < until)
    return query


def list_requests(ws: Workspace, *, limit: int = 50, **filters: Any) -> list[RequestLogEntry]:
    """The ``limit`` most recently arrived requests of the project matching ``filters`` (model, version, since, until)."""
    with ws.session() as s:
        newest = _filtered(ws, **filters).order_by(RequestLogEntry.created_at.desc(), RequestLogEntry.id.desc())
        return list(s.scalars(newest.limit(limit)))


def get_request(ws: Workspace, request_id: str) -> RequestLogEntry | None:
    """The project's logged request with this id (None for an unknown one or another project's)."""
    with ws.session() as s:
        return s.scalar(select(RequestLogEntry).where(RequestLogEntry.project_id == ws.project_id,
                                                      RequestLogEntry.request_id == request_id))


def feedback_for(ws: Workspace, request_ids: list[str]) -> dict[str, list[RequestFeedback]]:
    """Every feedback row of these requests, oldest first, by request id."""
    out: dict[str, list[RequestFeedback]] = {rid: [] for rid in request_ids}
    if not request_ids:
        return out
    with ws.session() as s:
        rows = s.scalars(select(RequestFeedback).where(RequestFeedback.project_id == ws.project_id,
                                                       RequestFeedback.request_id.in_(request_ids))
                         .order_by(RequestFeedback.id))
        for row in rows:
            out[row.request_id].append(row)
    return out


def window(ws: Workspace, **filters: Any) -> Iterator[RequestLogEntry]:
    """Every logged request matching ``filters``, oldest first (read in pages, for an export)."""
    last_id = 0
    while True:
        with ws.session() as s:
            page = list(s.scalars(_filtered(ws, **filters).where(RequestLogEntry.id > last_id)
                                  .order_by(RequestLogEntry.id).limit(1000)))
        if not page:
            return
        yield from page
        last_id = page[-1].id
