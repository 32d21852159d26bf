"""``manage.py metrics_server [--port 9808] [--bind 127.0.0.1]``: serve this host's multiprocess metrics
(``PROMETHEUS_MULTIPROC_DIR``: what its Celery pools recorded) on a port of its own, for a worker host that
runs no web process. Bind it to a private interface: it has no token (the separate port is its protection)."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector

from ops.views import multiproc_dir


class Command(BaseCommand):
    help = "Serve this host's multiprocess metrics (PROMETHEUS_MULTIPROC_DIR) on a port of its own."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=9808)
        parser.add_argument("--bind", default="127.0.0.1", help="Address to listen on (a private interface).")

    def handle(self, *args: Any, **options: Any) -> None:
        directory = multiproc_dir()
        if not directory:
            raise CommandError("PROMETHEUS_MULTIPROC_DIR is not set: each process keeps its own metrics.")
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)
        server, thread = start_http_server(options["port"], addr=options["bind"], registry=registry)
        self.stdout.write(f"metrics of {directory} on http://{options['bind']}:{server.server_port}/metrics")
        self.stdout.flush()
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()
        server.shutdown()
        thread.join(timeout=5)
