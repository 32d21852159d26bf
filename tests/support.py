"""Helpers shared by the test modules."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import NamedTuple

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
