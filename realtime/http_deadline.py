"""A total wall-clock deadline for one HTTP exchange made with ``requests``.

``requests`` only has per-operation timeouts: a peer that drips one byte every few seconds never
trips a read timeout and can hold a worker for as long as it likes. ``deadline(seconds)`` arms a
timer; when it fires, the sockets opened inside the block (registered by the connection classes
that ``track_connections`` installs on a session) are shut down, so whatever read or write is
blocked on them fails at once. ``expired`` tells the caller that the deadline, not the peer, ended
the exchange.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import requests
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_local = threading.local()


def _register(sock: socket.socket) -> None:
    sockets = getattr(_local, "sockets", None)
    if sockets is not None:
        sockets.append(sock)


class _TrackedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _register(sock)
        return sock


class _TrackedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _register(sock)  # the raw socket: shutting it down also ends the TLS layer above it
        return sock


class _TrackedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _TrackedHTTPConnection


class _TrackedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _TrackedHTTPSConnection


def track_connections(session: requests.Session) -> requests.Session:
    """Make the session's adapters open connections that ``deadline`` can cut."""
    for adapter in session.adapters.values():
        manager = getattr(adapter, "poolmanager", None)
        if manager is not None:
            manager.pool_classes_by_scheme = {"http": _TrackedHTTPPool, "https": _TrackedHTTPSPool}
    return session


@contextmanager
def deadline(seconds: float) -> Iterator[threading.Event]:
    """Cut every connection opened in this block (on this thread) after ``seconds``."""
    sockets: list[socket.socket] = []
    expired = threading.Event()

    def fire() -> None:
        expired.set()
        for sock in list(sockets):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:  # already closed
                pass

    previous = getattr(_local, "sockets", None)
    _local.sockets = sockets
    timer = threading.Timer(max(0.0, seconds), fire)
    timer.daemon = True
    timer.start()
    try:
        yield expired
    finally:
        timer.cancel()
        _local.sockets = previous
