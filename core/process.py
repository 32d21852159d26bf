"""Helpers for long-running management commands."""

from __future__ import annotations

import signal
import threading
from types import FrameType


def wait_until_stopped() -> int:
    """Block until SIGINT or SIGTERM; returns the signal's number.

    The handlers are installed here, not inherited: a process started in the background of a
    non-interactive shell inherits SIGINT *ignored* (Python then never raises KeyboardInterrupt),
    and process managers (honcho, Docker) stop with SIGTERM."""
    stopped = threading.Event()
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        stopped.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
    stopped.wait()
    return received[0]
