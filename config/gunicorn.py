"""Gunicorn's settings for every web process: ``gunicorn config.wsgi -c python:config.gunicorn`` (Procfile,
deploy/Dockerfile). Binding, workers and threads stay on each command line.

A stop (SIGTERM) is graceful: gunicorn closes its listening socket, lets the requests in flight end and kills
what still runs ``WEB_GRACEFUL_TIMEOUT`` seconds later. Streamed chat answers end themselves before that
(``CHAT_STOP_SECONDS`` after the stop: the partial answer stored as interrupted, the client told to ask again),
so an orchestrator's grace period of ``WEB_GRACEFUL_TIMEOUT`` plus a margin always ends with every connection
closed cleanly.
"""

from __future__ import annotations

import os
import signal
from typing import Any

graceful_timeout = int(os.environ.get("WEB_GRACEFUL_TIMEOUT", "30"))


def post_worker_init(worker: Any) -> None:
    """In each worker, after gunicorn installed its signal handlers: note the stop for the streams."""
    from core import shutdown

    shutdown.install(signal.SIGTERM)


def child_exit(server: Any, worker: Any) -> None:
    """Prometheus multiprocess mode: a worker that exited no longer counts in live gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
