"""What the fiches app plugs into ``realtime``: who may subscribe to its channels
(``private-job-{id}``, ``private-fiche-{id}``), the payload of its job webhooks, who may redeliver
them, and what a webhook attempt changes on its job (counters; 410 stops the job's webhooks).
Registered in ``FichesConfig.ready``."""

from __future__ import annotations

from urllib.parse import urlencode

from django.conf import settings
from django.db.models import F

from accounts.grants import has_grant
from accounts.permissions import HasGrant, can_access
from core.exceptions import PermissionDeniedError
from fiches import selectors
from fiches.job_snapshots import job_payload
from fiches.models import ProgressiveFetchJob
from realtime.models import WebhookDelivery
from realtime.registry import AttemptReport, register_channel_authorizer, register_webhook_source
from realtime.webhooks import webhook_send

JOB_WEBHOOK_SOURCE = "progressive_fetch_job"


# --- Channels -------------------------------------------------------------------------------


def authorize_job_channel(user, job_id: str) -> None:
    """``private-job-{id}``: fiches.read (as the job endpoints) and the job is the user's (or the
    user has fiches scope ALL)."""
    if not has_grant(user, "fiches", "read"):
        raise PermissionDeniedError("missing fiches.read")
    selectors.job_for_user(user, job_id)


def authorize_fiche_channel(user, fiche_id: str) -> None:
    """``private-fiche-{id}``: fiches.read and the fiche cached and in the user's scope."""
    if not has_grant(user, "fiches", "read"):
        raise PermissionDeniedError("missing fiches.read")
    row = selectors.fiche_row(fiche_id)
    if row is None or not can_access(user, "fiches", row):
        raise PermissionDeniedError("fiche unknown or outside your scope")


# --- Job webhooks ---------------------------------------------------------------------------


def job_webhook_data(job: ProgressiveFetchJob) -> dict:
    """The ``data`` of a job webhook: the job's state as given (the caller's in-memory job, which
    may be ahead of its row inside the caller's transaction) and the cached fiches of its range
    filtered by the scope snapshot stored on the job, at most ``WEBHOOK_PARTIAL_DATA_LIMIT``."""
    partial, truncated = selectors.partial_fiches_for_job(job, limit=settings.WEBHOOK_PARTIAL_DATA_LIMIT)
    query = urlencode({"startDate": job.start_date.isoformat(), "endDate": job.end_date.isoformat()})
    return {
        **job_payload(job),
        "status": job.status,  # as given: the webhook of a state, not the defensive reading of a poll
        "error": job.error,
        "dataUrl": f"{settings.API_BASE_URL}/api/fiches/status/by-date-range?{query}",
        "partialData": [
            {
                "fiche_id": row["fiche_id"],
                "sales_date": row["sales_date"].isoformat(),
                "prospect_name": " ".join(p for p in (row["prospect_prenom"], row["prospect_nom"]) if p),
                "groupe": row["groupe"],
                "recordings_count": row["recordings_count"],
            }
            for row in partial
        ],
        "partialDataTruncated": truncated,
    }


def send_job_webhook(*, job: ProgressiveFetchJob, event: str) -> WebhookDelivery | None:
    """Queue a webhook of ``event`` with the job's state (inside the caller's transaction; sent
    after commit). No-op when the job has no webhook URL or its webhooks were stopped (410)."""
    if not job.webhook_url or job.webhooks_disabled:
        return None
    return webhook_send(
        source=JOB_WEBHOOK_SOURCE,
        source_id=str(job.pk),
        event=event,
        url=job.webhook_url,
        secret=job.webhook_secret,
        data=job_webhook_data(job),
    )


def authorize_job_webhooks(user, job_id: str) -> None:
    """Redelivering a job's webhook needs fiches.write and the job (as the job endpoints)."""
    HasGrant("fiches", "write").require(user)
    selectors.job_for_user(user, job_id)


def on_job_webhook_attempt(job_id: str, report: AttemptReport) -> None:
    """Keep the job's webhook counters; a 410 Gone stops its later webhooks."""
    updates: dict = {
        "webhook_attempts": F("webhook_attempts") + 1,
        "webhook_last_status_code": report.status_code,
        "webhook_last_error": report.error,
        "webhook_last_attempt_at": report.started_at,
    }
    if report.gone:
        updates["webhooks_disabled"] = True
    ProgressiveFetchJob.objects.filter(pk=job_id).update(**updates)


def register() -> None:
    register_channel_authorizer("private-job-", authorize_job_channel, reads=("fiches",))
    register_channel_authorizer("private-fiche-", authorize_fiche_channel, reads=("fiches",))
    register_webhook_source(JOB_WEBHOOK_SOURCE, authorize=authorize_job_webhooks, on_attempt=on_job_webhook_attempt)
