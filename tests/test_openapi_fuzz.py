"""Schemathesis over our own OpenAPI schema (``/api/schema/``): no operation answers a 5xx (503, a
dependency down, excepted) to any input the schema allows or forbids.

Every operation of the schema, as an ALL user (every permission key read+write, scope ALL) and as a
SELF user (every key, scope SELF, CRM user ``u-417``), in-process through the WSGI application
production serves (``config.wsgi``, every middleware), on the test Postgres and Redis. Each
operation is one pytest item in its own transaction, on the same seeded data: cached fiches (one of
the SELF user's, one not) with a recording and its transcript, the default audit config, a
completed audit on each fiche, a product, a progressive job, a webhook delivery, an automation
schedule and run, a batch. Three times in four the path parameters and the body's id fields (fiche
ids, config ids, Pusher channel names) are seeded ids, so operations reach their real work; otherwise
they stay as generated (unknown ids, odd strings). Each call starts with the test Redis flushed, below
every throttle and rate limit. The CRM, the LLM, speech-to-text and Pusher are configured on a
closed port: operations that call them must answer 503 or a 4xx.

Phases: the schema's examples and fuzzing (``MAX_EXAMPLES`` generated cases per operation, valid and
invalid) for both users; coverage (every boundary and schema-violating value, wrong methods and
media types) for the ALL user — validation comes before scope checks. Derandomized with a fixed
seed, no example database: a run repeats. Nothing is skipped (a chat POST streams its SSE answer,
which ends at once with ``event: error`` as the LLM is unreachable). ``-m schema`` selects it,
``-m "not schema"`` leaves it out. ``SCHEMA_CONFORMANCE=1`` also checks status codes, content types
and response bodies against the schema (not asserted by default: see the findings list of issue 18).
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pytest
import schemathesis
from django.core.management import call_command
from django.core.servers.basehttp import get_internal_wsgi_application
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from accounts.grants import PERMISSION_KEYS
from accounts.tokens import issue_tokens
from core.redis import get_redis

pytestmark = [pytest.mark.schema, pytest.mark.django_db]

MAX_EXAMPLES = 25
SEED = 20_261_206
CLOSED = "http://127.0.0.1:9"  # nothing listens there
T0 = datetime(2026, 2, 3, 8, 0, tzinfo=UTC)
DAY = date(2026, 2, 2)
CHECKS = [not_a_server_error]
if os.environ.get("SCHEMA_CONFORMANCE"):
    CHECKS += [status_code_conformance, content_type_conformance, response_schema_conformance]


def load_schema(*, coverage: bool) -> schemathesis.BaseSchema:
    """Our schema, fetched from /api/schema/ through the WSGI application production serves, which
    then answers every call."""
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none", "mode": "all"},
            "phases": {"coverage": {"enabled": coverage}, "stateful": {"enabled": False}},
            # 503 is the documented answer of a dependency that is down (CRM, LLM, speech-to-text here).
            "checks": {"not_a_server_error": {"expected-statuses": ["1XX", "2XX", "3XX", "4XX", "503"]}},
        }
    )
    return schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_internal_wsgi_application(), config=config)


schema_all = load_schema(coverage=True)
schema_self = load_schema(coverage=False)


@dataclass
class World:
    """The seeded data and the two users' headers."""

    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    ids: dict[str, list[Any]] = field(default_factory=dict)


@pytest.fixture(autouse=True)
def _keep_the_test_connection():
    """As Django's test client: the WSGI handler's end-of-request hook must not close the database
    connection that holds the test's transaction."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.CRM_BASE_URL = CLOSED
    settings.LLM_BASE_URL = f"{CLOSED}/v1"
    settings.LLM_API_KEY = "sk-fuzz"
    settings.LLM_MAX_RETRIES = 0
    settings.ELEVENLABS_BASE_URL = CLOSED
    settings.ELEVENLABS_API_KEY = "el-fuzz"
    settings.CRM_TIMEOUT_SECONDS = 2
    # Channel authorization runs (it is local); events published on the way go nowhere.
    settings.PUSHER_APP_ID, settings.PUSHER_KEY, settings.PUSHER_SECRET = "1", "fuzz-key", "fuzz-secret"
    settings.PUSHER_HOST, settings.PUSHER_PORT, settings.PUSHER_USE_TLS = "127.0.0.1", 9, False


@pytest.fixture
def world(make_role, make_user) -> World:
    from audits.models import Audit, AuditStepResult, ControlPointResult
    from audits.services.reviews import recompute_audit, rescore_step
    from automation.models import AutomationRun, AutomationSchedule
    from batches.models import Batch
    from fiches.models import FicheCache, FicheCacheDetails, Recording
    from fiches.notifications import JOB_WEBHOOK_SOURCE
    from products.models import Product
    from realtime.models import WebhookDelivery
    from tests.support import make_job
    from transcriptions.models import Transcription

    everything = {key.replace("-", "_"): ("rw", "ALL") for key in PERMISSION_KEYS}
    mine = {key.replace("-", "_"): ("rw", "SELF") for key in PERMISSION_KEYS}
    all_user = make_user(make_role("fuzz-all", **everything), email="all@example.com", groupes=["Lyon-2"])
    self_user = make_user(
        make_role("fuzz-self", **mine), email="self@example.com", groupes=["Lyon-2"], crm_user_id="u-417"
    )

    fiches = {}
    for fiche_id, crm_user in (("F-OWN", "u-417"), ("F-OTHER", "u-9")):
        fiche = FicheCache.objects.create(
            fiche_id=fiche_id,
            sales_date=DAY,
            groupe="Lyon-2",
            crm_user_id=crm_user,
            details_success=True,
            details_fetched_at=T0,
            last_revalidated_at=T0,
        )
        FicheCacheDetails.objects.create(fiche=fiche)
        recording = Recording.objects.create(
            call_id=f"c-{fiche_id}", fiche=fiche, started_at=T0, direction="outbound", recording_url=f"{CLOSED}/a.mp3"
        )
        Transcription.objects.create(
            recording=recording,
            fiche=fiche,
            call_id=recording.call_id,
            status="completed",
            words=[{"text": "bonjour", "start": 0.0, "end": 0.5, "type": "word", "speaker_id": "speaker_0"}],
            speaker_map={"speaker_0": "agent"},
            transcribed_at=T0,
        )
        fiches[fiche_id] = fiche

    call_command("seed_audit_configs", verbosity=0)
    from audits.models import AuditConfig

    config = AuditConfig.objects.get()
    audits = []
    for fiche in fiches.values():
        audit = Audit.objects.create(
            fiche=fiche, config=config, config_version=config.current_version, status="completed", completed_at=T0
        )
        for step in config.current_version.steps.all():
            row = AuditStepResult.objects.create(audit=audit, step=step, position=step.position, status="completed")
            for point in step.control_points.all():
                ControlPointResult.objects.create(step_result=row, index=point.index, ai_status="pass", status="pass")
            rescore_step(row)
        recompute_audit(audit)
        audits.append(audit)

    product = Product.objects.create(name="Mutuelle Santé", code="mutuelle-sante")
    job = make_job(all_user, DAY, 3)
    delivery = WebhookDelivery.objects.create(
        source=JOB_WEBHOOK_SOURCE, source_id=str(job.pk), url=f"{CLOSED}/hook", event="progress", payload="{}"
    )
    schedule = AutomationSchedule.objects.create(name="Nightly", created_by=all_user)
    run = AutomationRun.objects.create(schedule=schedule)
    batch = Batch.objects.create(operation_type="transcription", requested_by=all_user)

    world = World()
    for name, user in (("all", all_user), ("self", self_user)):
        world.headers[name] = {"Authorization": f"Bearer {issue_tokens(user).access}"}
    audit_ids = [str(a.pk) for a in audits]
    world.ids = {
        # path parameters
        "fiche_id": ["F-OWN", "F-OTHER"],
        "audit_id": audit_ids,
        "config_id": [config.pk],
        "position": [1, 7],
        "index": [0],
        "product_id": [product.pk],
        "role_id": [all_user.roles.get().pk],
        "user_id": [self_user.pk],
        "job_id": [str(job.pk)],
        "delivery_id": [delivery.pk],
        "schedule_id": [schedule.pk],
        "run_id": [str(run.pk)],
        "batch_id": [str(batch.pk)],
        "call_id": ["c-F-OWN", "c-F-OTHER"],
        # body fields
        "audit_config_id": [config.pk],
        "fiche_ids": [["F-OWN"], ["F-OWN", "F-OTHER"]],
        "audit_config_ids": [[config.pk]],
        "socket_id": ["123.456"],
        "channel_name": [
            "private-fiche-F-OWN",
            "private-fiche-F-OTHER",
            f"private-job-{job.pk}",
            f"private-audit-{audit_ids[0]}",
            f"private-audit-{audit_ids[1]}",
            "private-transcription-F-OWN",
            f"private-job-automation-run-{run.pk}",
            f"private-user-{self_user.pk}",
            "private-global",
        ],
    }
    return world


def with_seeded_ids(case, world: World) -> None:
    """Three times in four (by a hash of the generated values, so runs repeat) the path parameters and
    the body's id fields become seeded ids, so an operation reaches its real work; otherwise they stay
    as generated (unknown ids, odd strings)."""
    containers = [case.path_parameters or {}]
    if isinstance(case.body, dict):
        containers.append(case.body)
    for values in containers:
        digest = zlib.crc32(repr(sorted(values.items(), key=repr)).encode())
        if digest % 4 == 0:
            continue
        for name in values:
            known = world.ids.get(name)
            if known:
                values[name] = known[(digest >> 2) % len(known)]


def call(case, world: World, user: str) -> None:
    with_seeded_ids(case, world)
    get_redis().flushdb()  # below every throttle and rate limit (login, CRM, LLM): past them is the code to fuzz
    headers = world.headers[user]
    response = case.call(headers=headers)
    case.validate_response(response, checks=CHECKS, headers=headers)


# ``world`` is built once per operation and shared by its examples, on purpose: they run on one database.
SHARED_FIXTURE = hypothesis_settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


@schema_all.parametrize()
@SHARED_FIXTURE
def test_as_an_all_user(case, world):
    call(case, world, "all")


@schema_self.parametrize()
@SHARED_FIXTURE
def test_as_a_self_user(case, world):
    call(case, world, "self")
