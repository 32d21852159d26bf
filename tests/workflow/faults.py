"""Harness of the fault-injection suite: a dedicated Redis server (so it can be restarted with
its data lost), a Pusher-API stub and a webhook receiver on 127.0.0.1, and the assertion every
scenario ends with."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import redis
from django.test import override_settings

from fiches.models import ProgressiveFetchJob
from fiches.selectors import dates_between
from realtime.models import WebhookDelivery
from tests.support import free_port
from tests.workflow.conftest import wait_for


class RedisServer:
    """A throw-away ``redis-server`` that keeps nothing on disk."""

    def __init__(self):
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/1"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        client = redis.Redis(port=self.port)
        wait_for(lambda: _pings(client), timeout=10, message="redis-server to start")
        client.close()
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def restart_losing_data(self) -> None:
        """What a Redis restart without persistence does: every key is gone."""
        self.stop()
        self.start()


def _pings(client) -> bool:
    try:
        return client.ping()
    except redis.RedisError:
        return False


def purge_rabbitmq(url: str) -> None:
    """Empty our queues on the RabbitMQ at ``url``: what an earlier test left there is not this test's."""
    from django.conf import settings as django_settings
    from kombu import Connection, Exchange, Queue

    with Connection(url) as connection:
        for name in django_settings.CELERY_QUEUE_NAMES:
            queue = Queue(name, Exchange(name, type="topic"), routing_key=name)
            try:
                queue(connection.channel()).purge()
            except connection.channel_errors:
                pass  # not declared yet


@contextmanager
def celery_on(url: str):
    """Point this process's Celery app (producer pool and result backend) and ``REDIS_URL`` at the Redis at
    ``url``. The broker moves there too, unless the suite runs on RabbitMQ (``TEST_BROKER_URL``): then the
    workers and this process stay on RabbitMQ, emptied first, and only locks, caches and results move."""
    from django.conf import settings as django_settings

    from config.celery import app

    def reset():
        app._pool = None
        app.amqp._producer_pool = None
        if hasattr(app._local, "backend"):
            del app._local.backend

    broker = django_settings.CELERY_BROKER_URL if django_settings.CELERY_BROKER_IS_AMQP else url
    if broker != url:
        purge_rabbitmq(broker)
    old = (app.conf.broker_url, app.conf.result_backend)
    app.conf.broker_url, app.conf.result_backend = broker, url
    reset()
    try:
        with override_settings(REDIS_URL=url, CELERY_BROKER_URL=broker, CELERY_RESULT_BACKEND=url):
            yield
    finally:
        app.conf.broker_url, app.conf.result_backend = old
        reset()


class Recorder(ThreadingHTTPServer):
    """An HTTP server on 127.0.0.1 that records every complete POST and answers 200."""

    daemon_threads = True

    def __init__(self):
        self.records: list[dict] = []
        self.lock = threading.Lock()

        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:
                    # The sender died mid-request (a test killed its worker): like any HTTP server,
                    # a request cut short was never received.
                    self.close_connection = True
                    return
                with recorder.lock:
                    recorder.records.append({"path": self.path, "headers": dict(self.headers), "body": body})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                try:
                    self.wfile.write(b"{}")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # received; the sender died before reading the answer

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def pusher_events(self, name: str, job_id) -> list[dict]:
        """Events a Pusher stub received for the job's channel."""
        with self.lock:
            batches = [
                json.loads(r["body"])["batch"]
                for r in self.records
                if r["path"].split("?")[0].endswith("/batch_events")
            ]
        return [e for batch in batches for e in batch if e["name"] == name and e["channel"] == f"private-job-{job_id}"]

    def channel_events(self, channel: str, name: str | None = None) -> list[tuple[str, dict]]:
        """``(event name, payload)`` of every event a Pusher stub received on ``channel``, in order."""
        with self.lock:
            batches = [
                json.loads(r["body"])["batch"]
                for r in self.records
                if r["path"].split("?")[0].endswith("/batch_events")
            ]
        return [
            (e["name"], json.loads(e["data"]))
            for batch in batches
            for e in batch
            if e["channel"] == channel and (name is None or e["name"] == name)
        ]

    def webhooks(self, event: str, job_id) -> list[dict]:
        with self.lock:
            bodies = [json.loads(r["body"]) for r in self.records if r["path"] == "/hook"]
        return [b for b in bodies if b["type"] == event and b["data"]["jobId"] == str(job_id)]


def assert_job_ended_once(
    job_id, *, pusher: Recorder, receiver: Recorder | None, timeout: float = 60
) -> ProgressiveFetchJob:
    """The invariants of every scenario: the job is terminal, no date is lost or counted twice,
    and the terminal Pusher event and webhook happened exactly once."""
    job = wait_for(
        lambda: (j := ProgressiveFetchJob.objects.get(pk=job_id)).is_terminal and j,
        timeout=timeout,
        message=f"job {job_id} to finish",
    )
    all_dates = set(dates_between(job.start_date, job.end_date))
    completed, failed = set(job.dates_already_fetched), set(job.dates_failed)
    assert len(job.dates_already_fetched) == len(completed) and len(job.dates_failed) == len(failed)
    assert completed | failed == all_dates and not (completed & failed)
    assert job.dates_remaining == [] and job.progress == 100
    assert job.completed_days == len(completed) and job.completed_at is not None
    assert job.status == ("failed" if failed else "complete")
    terminal = f"fiches.progressive_fetch.{job.status}"
    other = "fiches.progressive_fetch.failed" if job.status == "complete" else "fiches.progressive_fetch.complete"
    wait_for(lambda: pusher.pusher_events(terminal, job.id), timeout=15, message="the terminal Pusher event")
    if receiver is not None:
        wait_for(lambda: receiver.webhooks(terminal, job.id), timeout=15, message="the terminal webhook")
    time.sleep(1.5)  # anything duplicated would arrive now
    assert len(pusher.pusher_events(terminal, job.id)) == 1
    assert pusher.pusher_events(other, job.id) == []
    if receiver is not None:
        assert len(receiver.webhooks(terminal, job.id)) == 1
        assert receiver.webhooks(other, job.id) == []
        assert WebhookDelivery.objects.filter(source_id=str(job.pk), event=terminal).count() == 1
    return job


class SlowReceiver(ThreadingHTTPServer):
    """A webhook receiver on 127.0.0.1 that waits ``delay`` seconds before answering 200."""

    daemon_threads = True

    def __init__(self, delay: float):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                time.sleep(receiver.delay)
                try:
                    self.send_response(200)
                    self.end_headers()
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        self.delay = delay
        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
