"""Reads of the realtime app."""


def job_webhook_deliveries(job, *, limit: int = 10) -> list[dict]:
    """The job's latest webhook deliveries (never the secret)."""
    return []
