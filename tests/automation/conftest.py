"""Fixtures of the automation tests: users who own schedules (the grants a run uses, per scope), the
CRM simulator over HTTP (to prove what was, or was not, asked of it), and the Pusher settings that
make published events reach the test broker (read back with ``queued_tasks``)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator

import pytest
import redis
from django.conf import settings as django_settings

from fiches.simulator.server import CrmSimulator, SimulatorConfig
from tests.support import QueuedTask, queued_tasks

RUN_KEYS = ("fiches", "transcriptions", "audits")
_roles = itertools.count(1)


@pytest.fixture
def make_owner(make_role, make_user):
    """``make_owner("GROUP", groupes=["Lyon-1"])``: a user with automation.write and, per key a run
    uses, read and write in ``scope`` (``scopes={"audits": "SELF"}`` overrides one key; ``None``
    drops it)."""

    def _make(
        scope: str = "ALL",
        *,
        scopes: dict[str, str | None] | None = None,
        groupes: tuple[str, ...] | list[str] = (),
        crm_user_id: str | None = None,
        email: str | None = None,
    ):
        per_key: dict[str, str | None] = {key: scope for key in RUN_KEYS}
        per_key.update(scopes or {})
        grants = {key: ("rw", value) for key, value in per_key.items() if value is not None}
        role = make_role(f"owner-{next(_roles)}", automation=("rw", "ALL"), **grants)
        return make_user(role, email=email, groupes=list(groupes), crm_user_id=crm_user_id)

    return _make


@pytest.fixture
def boss(make_owner):
    """An owner with every grant a run uses, scope ALL."""
    return make_owner("ALL", email="boss@example.com")


@pytest.fixture(scope="module")
def crm_sim() -> Iterator[CrmSimulator]:
    with CrmSimulator(SimulatorConfig(seed=42, fiches_per_day=6)) as sim:
        yield sim


@pytest.fixture
def crm(crm_sim, settings) -> CrmSimulator:
    """The CRM simulator, its request log empty; the CRM client points at it."""
    crm_sim.config = SimulatorConfig(seed=42, fiches_per_day=6)
    crm_sim.clear_requests()
    settings.CRM_BASE_URL = crm_sim.url
    settings.CRM_RATE_LIMIT = "off"
    return crm_sim


@pytest.fixture
def pusher_on(settings) -> None:
    """Pusher "configured": published events go (after commit) to the broker as
    ``send_pusher_messages`` tasks, read back with ``published``."""
    settings.PUSHER_APP_ID, settings.PUSHER_KEY, settings.PUSHER_SECRET = "1", "key", "secret"
    settings.REALTIME_STRICT_EVENTS = True


def published() -> list[tuple[str, str, dict]]:
    """``(channel, event, data)`` of every event waiting in the broker, oldest first."""
    events = []
    for task in queued_tasks("default"):
        if task.name == "realtime.tasks.send_pusher_messages":
            for message in task.args[0]:
                events.append((message["channel"], message["name"], json.loads(message["data"])))
    return events


AUTOMATION_QUEUES = ("default", "crm", "webhooks")


class SentTasks:
    """The automation task messages waiting in the test broker's queues, as ``(task name, args)``, read
    at each look: what the code under test sent (nothing consumes them)."""

    def _items(self) -> list[tuple[str, tuple]]:
        return [
            (task.name, tuple(task.args))
            for queue in AUTOMATION_QUEUES
            for task in queued_tasks(queue)
            if task.name.startswith("automation.")
        ]

    def __iter__(self):
        return iter(self._items())

    def __len__(self) -> int:
        return len(self._items())

    def __getitem__(self, index: int) -> tuple[str, tuple]:
        return self._items()[index]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, list | tuple | SentTasks) and self._items() == list(other)

    def __repr__(self) -> str:
        return repr(self._items())


@pytest.fixture
def dispatched() -> SentTasks:
    """The automation tasks sent to the (test) broker so far."""
    return SentTasks()


def take_queued(queue: str) -> list[QueuedTask]:
    """The task messages waiting in ``queue``, oldest first, removed from it (what a worker takes)."""
    tasks = queued_tasks(queue)
    client = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    try:
        client.delete(queue)
    finally:
        client.close()
    return tasks
