"""Helpers shared by the test modules."""

from __future__ import annotations

import base64
import json
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
