"""Process plumbing shared by the worker and the stage runner (stdlib only)."""

from __future__ import annotations

import signal


def die_with_parent() -> None:
    """Linux: ask for SIGKILL when the parent process dies, so no orphan keeps training. Elsewhere a no-op."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
