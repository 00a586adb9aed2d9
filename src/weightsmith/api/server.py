"""Serve an ASGI app with uvicorn on a socket we bind ourselves, so ``--port 0`` can say which port it got.

Used by ``weightsmith api`` (and later by ``weightsmith serve`` and ``weightsmith mcp --http``). It binds
127.0.0.1 unless told otherwise, prints one line ``... listening on http://HOST:PORT`` once the
socket is bound (tests and scripts read it), and stops gracefully on SIGINT/SIGTERM: uvicorn finishes
in-flight requests before it exits.
"""

from __future__ import annotations

import socket
import sys
from typing import Any, TextIO

from weightsmith.errors import UserError


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free one).

    Raises:
        UserError: the address is in use or cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port or --host.") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(app: Any, *, host: str, port: int, what: str, out: TextIO = sys.stdout, log_level: str = "warning") -> None:
    """Run ``app`` until SIGINT/SIGTERM; print ``{what} listening on http://HOST:PORT`` first."""
    import uvicorn

    sock = bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=30, access_log=False)
    server = uvicorn.Server(config)
    print(f"{what} listening on http://{shown}:{bound_port}", file=out, flush=True)
    server.run(sockets=[sock])
