"""``publish(event, payload)``: the one entry point every app uses to notify clients via Pusher.

- The payload is the domain object itself (no wrapper), routed per the contract
  (``realtime.events.channels_for``), truncated under Pusher's 10 KB limit when needed. Each channel
  gets only what all its subscribers may read: the full payload where the channel's authorization
  implies the event's reader key, else a notify-only copy (ids and status); URLs and secrets never go
  out. ``user_id`` adds the one user the event concerns (their ``private-user-{id}`` channel).
- Events are sent after the current transaction commits; ``publish_many`` sends several events
  together as Pusher batch triggers (at most 10 events per HTTP call).
- Best-effort: a Pusher error or timeout is logged and never breaks the caller. An API request
  never waits on Pusher: outside a Celery worker the batch is handed to a task.
- An unknown event or a payload missing a required field raises ``InvalidEvent`` when
  ``REALTIME_STRICT_EVENTS`` is on (tests), and is logged and dropped otherwise.
- ``PUSHER_APP_ID`` / ``PUSHER_KEY`` / ``PUSHER_SECRET`` unset: disabled, events logged at DEBUG.
"""

from __future__ import annotations

import logging
import time

import pusher
from celery import current_task, shared_task
from django.conf import settings
from django.db import transaction

from realtime.events import (
    InvalidEvent,
    channels_for,
    encode_payload,
    notify_only,
    reader_of,
    scrub,
    validate_event,
)
from realtime.registry import channel_reads

logger = logging.getLogger("realtime.publisher")
BATCH_SIZE = 10  # Pusher's maximum events per batch trigger


def pusher_enabled() -> bool:
    return bool(settings.PUSHER_APP_ID and settings.PUSHER_KEY and settings.PUSHER_SECRET)


def pusher_client() -> pusher.Pusher:
    options = {
        "app_id": str(settings.PUSHER_APP_ID),
        "key": settings.PUSHER_KEY,
        "secret": settings.PUSHER_SECRET,
        "ssl": settings.PUSHER_USE_TLS,
        "timeout": settings.PUSHER_TIMEOUT_SECONDS,
    }
    if settings.PUSHER_HOST:
        options["host"] = settings.PUSHER_HOST
    elif settings.PUSHER_CLUSTER:
        options["cluster"] = settings.PUSHER_CLUSTER
    if settings.PUSHER_PORT:
        options["port"] = settings.PUSHER_PORT
    return pusher.Pusher(**options)


def build_messages(event: str, payload: dict, *, user_id: object = None) -> list[dict]:
    """The batch entries of one event: one per channel, data already encoded and truncated, each the
    full payload or its notify-only copy depending on who may subscribe to the channel."""
    validate_event(event, payload)
    reader = reader_of(event)
    payload = scrub(payload)
    full = encode_payload(payload)
    redacted: str | None = None
    messages = []
    for channel in channels_for(event, payload, user_id=user_id):
        if channel_reads(channel, reader):
            data = full
        else:
            redacted = redacted or encode_payload(notify_only(payload))
            data = redacted
        messages.append({"channel": channel, "name": event, "data": data})
    return messages


def publish(event: str, payload: dict, *, user_id: object = None) -> None:
    """Publish ``event`` with ``payload`` once the current transaction commits (``user_id``: also to
    that user's own channel, in full)."""
    publish_many([(event, payload)], user_id=user_id)


def publish_many(events: list[tuple[str, dict]], *, user_id: object = None) -> None:
    """Publish several events together (Pusher batch triggers of at most 10) after commit.

    Each call registers its own ``on_commit`` callback, so events published inside a savepoint
    that rolls back are dropped with it.
    """
    messages = []
    for event, payload in events:
        try:
            built = build_messages(event, payload, user_id=user_id)
        except InvalidEvent:
            if settings.REALTIME_STRICT_EVENTS:
                raise
            logger.error("realtime_event_invalid", exc_info=True, extra={"event": event})
            continue
        logger.info(
            "realtime_event",
            extra={"event": event, "job_id": payload.get("jobId"), "channels": [m["channel"] for m in built]},
        )
        messages.extend(built)
    if not messages:
        return
    if not pusher_enabled():
        logger.debug("pusher_disabled", extra={"events": len(messages)})
        return
    transaction.on_commit(lambda: _deliver(messages))  # outside a transaction this runs at once


def _deliver(messages: list[dict]) -> None:
    if current_task and current_task.request.id:  # in a worker: send now (short timeout)
        send_messages(messages)
        return
    try:  # in a web request: never wait on Pusher
        send_pusher_messages.delay(messages)
    except Exception:
        logger.exception("pusher_enqueue_failed", extra={"events": len(messages)})


@shared_task(name="realtime.tasks.send_pusher_messages", ignore_result=True)
def send_pusher_messages(messages: list[dict]) -> int:
    """Pusher batch triggers for events published during a web request (requests never wait)."""
    return send_messages(messages)


_circuit = {"open_until": 0.0}


def send_messages(messages: list[dict]) -> int:
    """Send batch triggers of at most 10 events; returns how many were accepted. Never raises.

    After a failure, sending pauses for ``PUSHER_BACKOFF_SECONDS`` (events are dropped and
    logged): an unreachable Pusher must not slow every job down by a timeout per event.
    """
    sent = 0
    client = pusher_client()
    for start in range(0, len(messages), BATCH_SIZE):
        batch = messages[start : start + BATCH_SIZE]
        if time.monotonic() < _circuit["open_until"]:
            logger.warning("pusher_paused_event_dropped", extra={"events": [m["name"] for m in batch]})
            continue
        try:
            client.trigger_batch(batch, already_encoded=True)  # encoded and size-checked by us
            sent += len(batch)
        except Exception as exc:  # best-effort: Pusher down must not break a job or a request
            _circuit["open_until"] = time.monotonic() + settings.PUSHER_BACKOFF_SECONDS
            logger.warning(
                "pusher_trigger_failed",
                extra={"error": f"{type(exc).__name__}: {exc}", "events": [m["name"] for m in batch]},
            )
    return sent
