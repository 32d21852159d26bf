"""A process told to stop, and how long what it still serves may go on.

A web worker stops gracefully on SIGTERM (gunicorn: no new connection, the requests in flight end, what still runs
after ``WEB_GRACEFUL_TIMEOUT`` seconds is killed). Requests end by themselves, except streams that follow a
slow producer — a chat answer streams as the LLM writes it. ``install(signal.SIGTERM)`` (``config/gunicorn.py``,
in each web worker) notes when the stop came; such a stream asks ``stop_deadline_passed(seconds)`` between two
chunks and ends itself, cleanly (its partial answer stored, the client told), before gunicorn kills it.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

_stop_requested_at: float | None = None


def request_stop() -> None:
    """Note that this process was told to stop (the first time counts)."""
    global _stop_requested_at
    if _stop_requested_at is None:
        _stop_requested_at = time.monotonic()


def stop_deadline_passed(seconds: float) -> bool:
    """True once this process has been stopping for ``seconds`` or more."""
    return _stop_requested_at is not None and time.monotonic() - _stop_requested_at >= seconds


def install(signum: int = signal.SIGTERM) -> None:
    """Note the stop when ``signum`` arrives, then hand the signal to the handler installed before (the server's
    own: gunicorn's stops accepting and drains). System calls are not interrupted by it, as gunicorn has it."""
    previous: Callable[[int, FrameType | None], Any] | int | None = signal.getsignal(signum)

    def handler(number: int, frame: FrameType | None) -> None:
        request_stop()
        if callable(previous):
            previous(number, frame)

    signal.signal(signum, handler)
    signal.siginterrupt(signum, False)
