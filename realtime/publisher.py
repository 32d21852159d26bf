"""``publish(event, payload)``: the one entry point every app uses to notify clients via Pusher.

Best-effort and after commit: a Pusher failure is logged and never breaks the caller.
"""

from __future__ import annotations

import logging

from django.db import transaction

logger = logging.getLogger("realtime.publisher")


def publish(event: str, payload: dict) -> None:
    """Publish ``event`` once the current transaction commits (immediately outside one)."""
    transaction.on_commit(lambda: _send(event, payload))


def _send(event: str, payload: dict) -> None:
    logger.info("realtime_event", extra={"event": event, "job_id": payload.get("jobId")})
