"""Helpers shared by the test modules."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import redis
from django.conf import settings


class QueuedTask(NamedTuple):
    name: str
    args: list
    kwargs: dict
    eta: str | None
    id: str


def queued_tasks(queue: str) -> list[QueuedTask]:
    """Task messages waiting in a queue of the test broker (Redis), oldest first: what a worker
    would run, read without running it."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    try:
        raw_messages = client.lrange(queue, 0, -1)
    finally:
        client.close()
    tasks = []
    for raw in reversed(raw_messages):  # kombu LPUSHes: newest first
        message = json.loads(raw)
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, kwargs, _embed = json.loads(body)
        headers = message["headers"]
        tasks.append(QueuedTask(headers["task"], args, kwargs, headers.get("eta"), headers["id"]))
    return tasks


def sale(
    fiche_id: str,
    on,
    *,
    groupe: str = "Lyon-2",
    crm_user_id: str = "u-417",
    nom: str = "Martin",
    prenom: str = "Paul",
    recordings=(),
) -> dict:
    """A sales-list item as the CRM client returns it."""
    return {
        "fiche_id": fiche_id,
        "sales_date": on.isoformat(),
        "groupe": groupe,
        "crm_user_id": crm_user_id,
        "agent_name": f"Agent {crm_user_id}",
        "statut": "Vendu",
        "produit": "Mutuelle Santé",
        "prospect": {"nom": nom, "prenom": prenom},
        "recordings": list(recordings),
    }


def sale_recording(call_id: str) -> dict:
    """A recording of a sales-list item (``sale(..., recordings=[...])``)."""
    return {
        "call_id": call_id,
        "recording_url": f"https://recordings.example/{call_id}.mp3",
        "started_at": "2026-02-02T09:00:00Z",
        "duration_seconds": 120,
        "direction": "outbound",
    }


def make_job(user, start, n: int, **fields):
    """A progressive fetch job row over ``n`` days from ``start``, every date remaining."""
    from fiches.models import ProgressiveFetchJob
    from fiches.selectors import dates_between

    all_days = dates_between(start, start + timedelta(days=n - 1))
    defaults = {
        "start_date": start,
        "end_date": all_days[-1],
        "total_days": n,
        "dates_remaining": all_days,
        "requested_by": user,
    }
    return ProgressiveFetchJob.objects.create(**{**defaults, **fields})


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process_group(process: subprocess.Popen | None, *, timeout: float = 15) -> None:
    """SIGTERM a child started with ``start_new_session=True`` and its children; SIGKILL after ``timeout``."""
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def simulated_call(call_id: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The speech-to-text simulator's words for an outbound call of the CRM simulator (seed 42), and
    the speaker map our timeline code gives them."""
    from transcriptions.simulator.script import transcript_for, truth_for
    from transcriptions.timeline import map_speakers

    words = transcript_for(call_id, seed=42, crm_seed=42)["words"]
    truth = truth_for(call_id, seed=42, crm_seed=42)
    speakers = map_speakers(
        words, direction="outbound", agent_name=truth["agent_name"], company_names=[truth["company"]]
    )
    return words, speakers


def transcribed_call(fiche: Any, call_id: str, started_at: datetime) -> Any:
    """A recording of ``fiche`` and its completed transcription, straight from the simulator's script."""
    from fiches.models import Recording
    from transcriptions.models import Transcription

    recording = Recording.objects.create(call_id=call_id, fiche=fiche, started_at=started_at, direction="outbound")
    words, speakers = simulated_call(call_id)
    return Transcription.objects.create(
        recording=recording,
        fiche=fiche,
        call_id=call_id,
        status="completed",
        words=words,
        speaker_map=speakers,
        transcribed_at=started_at,
    )


def run_threads(targets, *, timeout: float = 60) -> list[BaseException]:
    """Run each callable in its own thread (each closing its database connection), wait for all, and
    return what they raised: the house pattern for racing services against each other in DB tests."""
    import threading

    from django.db import connection

    errors: list[BaseException] = []

    def wrap(target):
        def run():
            try:
                target()
            except BaseException as exc:
                errors.append(exc)
            finally:
                connection.close()

        return run

    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    assert not any(thread.is_alive() for thread in threads)
    return errors


class Mailbox:
    """An SMTP server (aiosmtpd) on 127.0.0.1 keeping every message it receives; ``stop()`` it."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list = []
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd calls it by this name
        self.messages.append(envelope)
        return "250 OK"

    def stop(self) -> None:
        self.controller.stop()
