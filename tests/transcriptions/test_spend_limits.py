"""Speech-to-text spending is bounded per user: ``POST /api/transcriptions/{fiche_id}`` — forced or
not, since either can start vendor work — counts against TRANSCRIPTION_USER_RATE, and
``POST /api/transcriptions/batch`` counts its fiches against the batch budget it shares with audit
batches; over them, 429 with Retry-After in the error envelope and nothing created. Refused requests
(bad input, scope, unknown fiche, a run already going without force) do not count."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from batches.models import Batch
from fiches.models import FicheCache
from fiches.services.cache import cache_fiche_sales_summaries
from tests.support import sale
from tests.support import sale_recording as recording
from transcriptions.models import TranscriptionRun

pytestmark = pytest.mark.django_db

DAY = date(2026, 2, 2)
T0 = datetime(2026, 2, 3, 8, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _settings(settings, crm_sim):
    settings.CRM_BASE_URL = crm_sim.url
    settings.ELEVENLABS_API_KEY = "api-test-key"
    settings.ELEVENLABS_BASE_URL = "http://127.0.0.1:9"
    settings.LLM_API_KEY = "sk-test"


@pytest.fixture
def fiches():
    cache_fiche_sales_summaries(
        [
            sale("L1", DAY, groupe="Lyon-2", recordings=[recording("c-L1-1"), recording("c-L1-2")]),
            sale("L2", DAY, groupe="Lyon-2", recordings=[recording("c-L2-1")]),
            sale("P1", DAY, groupe="Paris-Est", crm_user_id="u-9", recordings=[recording("c-P1-1")]),
            sale("E1", DAY, groupe="Lyon-2"),
            sale("E2", DAY, groupe="Lyon-2"),
        ],
        revalidated_at=T0,
        covered_dates=[DAY],
    )
    FicheCache.objects.update(details_fetched_at=T0)  # fully fetched: no CRM call needed
    return {f.fiche_id: f for f in FicheCache.objects.all()}


@pytest.fixture
def writer(make_role, make_user):
    role = make_role("tx-group", transcriptions=("rw", "GROUP"), audits=("rw", "GROUP"))
    return make_user(role, email="tx-g@example.com", groupes=["Lyon-2"])


@pytest.fixture
def other_writer(make_role, make_user):
    return make_user(make_role("tx-all", transcriptions=("rw", "ALL")), email="tx-all@example.com")


def assert_throttled(response, code: str) -> None:
    assert response.status_code == 429, response.content
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"} and error["code"] == code
    assert int(response["Retry-After"]) >= 1 and error["details"]["retry_after"] == int(response["Retry-After"])


def test_every_transcription_request_counts_forced_or_not_and_refused_ones_do_not(
    fiches, writer, other_writer, auth_client, settings
):
    settings.TRANSCRIPTION_USER_RATE, settings.TRANSCRIPTION_USER_BURST = "1/h", 2
    client = auth_client(writer)
    for _ in range(3):  # refused: out of scope (403), not in the CRM (403 or 404), bad input (400)
        assert client.post("/api/transcriptions/P1", {}, format="json").status_code == 403
        assert client.post("/api/transcriptions/2225999", {}, format="json").status_code in (403, 404)
        assert client.post("/api/transcriptions/L1", {"priority": "urgent"}, format="json").status_code == 400

    first = client.post("/api/transcriptions/L1", {}, format="json")
    assert first.status_code == 202
    running = client.post("/api/transcriptions/L1", {"force": True}, format="json")
    assert running.status_code == 409  # a run without force is going: refused, not counted
    nothing = client.post("/api/transcriptions/E1", {}, format="json")
    assert (nothing.status_code, nothing.json()["status"]) == (200, "no_recordings")  # accepted: it counts

    assert_throttled(
        client.post("/api/transcriptions/L2", {"force": True}, format="json"), "transcription_requests_throttled"
    )
    assert_throttled(client.post("/api/transcriptions/L2", {}, format="json"), "transcription_requests_throttled")
    assert TranscriptionRun.objects.count() == 1
    assert client.get("/api/transcriptions/L2").status_code == 200  # reading costs nothing

    other = auth_client(other_writer).post("/api/transcriptions/L2", {"force": True}, format="json")
    assert other.status_code == 202  # another user's budget
    assert TranscriptionRun.objects.count() == 2


def test_transcription_batches_count_their_fiches_in_the_budget_shared_with_audit_batches(
    fiches, writer, auth_client, settings
):
    settings.BATCH_USER_RATE, settings.BATCH_USER_BURST = "1/h", 3
    settings.TRANSCRIPTION_BATCH_MAX = settings.AUDIT_BATCH_MAX = 10
    client = auth_client(writer)
    assert client.post("/api/transcriptions/batch", {"fiche_ids": ["L1", "P1"]}, format="json").status_code == 403
    too_large = client.post("/api/transcriptions/batch", {"fiche_ids": ["L1", "L2", "E1", "L1", "E2"]}, format="json")
    assert too_large.status_code == 400, too_large.content  # 4 fiches never fit a burst of 3
    assert too_large.json()["error"]["code"] == "batch_request_too_large"

    audits = client.post("/api/audits/batch", {"fiche_ids": ["L1", "L2"]}, format="json")
    assert audits.status_code == 202
    assert_throttled(
        client.post("/api/transcriptions/batch", {"fiche_ids": ["L1", "E1"]}, format="json"), "batch_requests_throttled"
    )
    assert client.post("/api/transcriptions/batch", {"fiche_ids": ["E1"]}, format="json").status_code == 202
    assert_throttled(client.post("/api/audits/batch", {"fiche_ids": ["E1"]}, format="json"), "batch_requests_throttled")
    assert sorted(Batch.objects.values_list("operation_type", flat=True)) == ["audit", "transcription"]
