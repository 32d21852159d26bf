"""``trace(event, ...)``: the workflow's checkpoint log lines (structured, with job id and date),
also written to ``workflow_logs`` when ``WORKFLOW_LOG_DB_ENABLED`` is on."""

from __future__ import annotations

import logging
from datetime import date

from django.conf import settings

logger = logging.getLogger("fiches.workflow")


def trace(event: str, *, job_id=None, day: date | str | None = None, level: int = logging.INFO, **data) -> None:
    extra = {"job_id": str(job_id) if job_id else None, "date": str(day) if day else None, **data}
    logger.log(level, event, extra={k: v for k, v in extra.items() if v is not None})
    if not settings.WORKFLOW_LOG_DB_ENABLED:
        return
    from fiches.models import WorkflowLog

    try:
        WorkflowLog.objects.create(
            event=event,
            level=logging.getLevelName(level),
            job_id=job_id or None,
            date=date.fromisoformat(day) if isinstance(day, str) else day,
            data={k: (v if isinstance(v, (int, float, bool, str, type(None))) else str(v)) for k, v in data.items()},
        )
    except Exception:  # observability must never break the workflow
        logger.exception("workflow_log_write_failed", extra={"event": event})
