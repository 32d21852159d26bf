"""The transcriptions API without a worker: grants and scope on every route, bad input, the vendor
key missing, fiches without recordings, unknown fiches (after a CRM miss), one run per fiche at a
time, batches (limits, scope), and the run's updater and reconciler at the service level."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from django.utils import timezone

from batches.models import Batch
from fiches.models import FicheCache, Recording
from fiches.services.cache import cache_fiche_sales_summaries
from tests.support import queued_tasks, sale
from tests.support import sale_recording as recording
from transcriptions.models import Transcription, TranscriptionRun
from transcriptions.services import runs

pytestmark = pytest.mark.django_db

DAY = date(2026, 2, 2)
T0 = datetime(2026, 2, 3, 8, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _settings(settings, crm_sim):
    settings.CRM_BASE_URL = crm_sim.url
    settings.ELEVENLABS_API_KEY = "api-test-key"
    settings.ELEVENLABS_BASE_URL = "http://127.0.0.1:9"


@pytest.fixture
def fiches():
    """Two cached fiches with two recordings each (Lyon-2 / u-417 and Paris-Est / u-9), one without."""
    cache_fiche_sales_summaries(
        [
            sale(
                "L1", DAY, groupe="Lyon-2", crm_user_id="u-417", recordings=[recording("c-L1-1"), recording("c-L1-2")]
            ),
            sale(
                "P1", DAY, groupe="Paris-Est", crm_user_id="u-9", recordings=[recording("c-P1-1"), recording("c-P1-2")]
            ),
            sale("E1", DAY, groupe="Lyon-2", crm_user_id="u-417"),
        ],
        revalidated_at=T0,
        covered_dates=[DAY],
    )
    FicheCache.objects.update(details_fetched_at=T0)  # treat them as fully fetched: no CRM call needed
    return {f.fiche_id: f for f in FicheCache.objects.all()}


@pytest.fixture
def group_writer(make_role, make_user):
    return make_user(
        make_role("tx-group", transcriptions=("rw", "GROUP")), email="tx-g@example.com", groupes=["Lyon-2"]
    )


@pytest.fixture
def all_reader(make_role, make_user):
    return make_user(make_role("tx-read", transcriptions=("r", "ALL")), email="tx-r@example.com")


def url(fiche_id: str, suffix: str = "") -> str:
    return f"/api/transcriptions/{fiche_id}{suffix}"


def test_a_request_creates_one_run_and_queues_its_orchestrator(
    fiches, group_writer, auth_client, django_capture_on_commit_callbacks
):
    client = auth_client(group_writer)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url("L1"), {"priority": "high"}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["status"], body["total_recordings"], body["to_transcribe"]) == ("pending", 2, 2)
    run = TranscriptionRun.objects.get(pk=body["run_id"])
    assert (run.priority, run.call_ids, run.requested_by_id) == ("high", ["c-L1-1", "c-L1-2"], group_writer.pk)
    assert set(Transcription.objects.filter(run=run).values_list("status", flat=True)) == {"pending"}
    assert [(t.name, t.args) for t in queued_tasks("default")] == [
        ("transcriptions.tasks.transcribe_fiche", [body["run_id"]])
    ]
    again = client.post(url("L1"), {}, format="json").json()  # one run per fiche at a time
    assert again["run_id"] == body["run_id"]
    forced = client.post(url("L1"), {"force": True}, format="json")
    assert forced.status_code == 409 and forced.json()["error"]["code"] == "transcription_running"


def test_status_of_a_fiche_never_transcribed_and_one_without_recordings(fiches, group_writer, auth_client):
    client = auth_client(group_writer)
    status = client.get(url("L1")).json()
    assert (status["status"], status["total_recordings"], status["transcribed"]) == ("none", 2, 0)
    assert [r["status"] for r in status["recordings"]] == ["none", "none"]
    empty = client.post(url("E1"), {}, format="json")
    assert empty.status_code == 200 and empty.json()["status"] == "no_recordings"
    assert not TranscriptionRun.objects.exists()


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("post", ""),
        ("get", ""),
        ("get", "/timeline"),
        ("get", "/recordings/c-P1-1"),
    ],
)
def test_every_route_denies_an_out_of_scope_fiche(method, suffix, fiches, group_writer, auth_client):
    response = getattr(auth_client(group_writer), method)(url("P1", suffix), {}, format="json")
    assert response.status_code == 403 and response.json()["error"]["code"] == "scope_denied"


@pytest.mark.parametrize(("method", "suffix"), [("post", ""), ("get", ""), ("get", "/timeline")])
def test_grants_are_required(method, suffix, fiches, make_user, all_reader, auth_client, api_client):
    assert getattr(api_client, method)(url("L1", suffix)).status_code == 401
    nobody = make_user(email="nobody@example.com")
    assert getattr(auth_client(nobody), method)(url("L1", suffix), {}, format="json").status_code == 403
    if method == "post":  # read is not write
        response = auth_client(all_reader).post(url("L1"), {}, format="json")
        assert response.status_code == 403 and "transcriptions.write" in response.json()["error"]["message"]


def test_bad_input_unknown_fiches_and_a_missing_vendor_key(fiches, group_writer, auth_client, settings, crm_sim):
    client = auth_client(group_writer)
    bad = client.post(url("L1"), {"priority": "urgent"}, format="json")
    assert bad.status_code == 400 and "priority" in bad.json()["error"]["details"]
    # Not cached: a GROUP writer cannot make us call the CRM, and is answered as for a foreign fiche.
    unknown = client.post(url("2225998"), {}, format="json")
    foreign = client.post(url("P1"), {}, format="json")
    assert unknown.status_code == foreign.status_code == 403
    assert unknown.json()["error"]["message"].replace("2225998", "P1") == foreign.json()["error"]["message"]
    assert not any(r["path"] == "/api/fiches/by-id/2225998" for r in crm_sim.requests())
    missing = client.get(url("L1", "/recordings/c-nope"))
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "recording_not_found"
    settings.ELEVENLABS_API_KEY = "  "
    unconfigured = client.post(url("L1"), {}, format="json")
    assert unconfigured.status_code == 503
    error = unconfigured.json()["error"]
    assert error["code"] == "dependency_unavailable" and "ELEVENLABS_API_KEY" in error["message"]


def test_an_uncached_fiche_is_fetched_from_the_crm_first_for_an_all_scope_writer(
    group_writer, make_role, make_user, auth_client, crm_sim
):
    """A fiche of the simulator's Lyon-2 group, never cached: a GROUP writer is refused before any CRM
    call (its group is not known yet); for an ALL writer its details come from the CRM and its recordings
    are queued; an unknown one is then a 404 from the CRM."""
    fiche_id = "2225000"  # Lyon-2, 3 recordings in the simulator
    refused = auth_client(group_writer).post(url(fiche_id), {}, format="json")
    assert refused.status_code == 403 and crm_sim.requests() == []
    writer = make_user(make_role("tx-all", transcriptions=("rw", "ALL")), email="tx-all@example.com")
    response = auth_client(writer).post(url(fiche_id), {}, format="json")
    assert response.status_code == 202, response.content
    assert response.json()["to_transcribe"] == 3
    assert FicheCache.objects.get(fiche_id=fiche_id).details_fetched_at is not None
    assert Recording.objects.filter(fiche__fiche_id=fiche_id).count() == 3
    unknown = auth_client(writer).post(url("2225998"), {}, format="json")  # the CRM answers 404
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "fiche_not_found"


def test_batches_validate_their_size_and_scope(
    fiches, group_writer, auth_client, settings, django_capture_on_commit_callbacks
):
    settings.TRANSCRIPTION_BATCH_MAX = 2
    client = auth_client(group_writer)
    too_many = client.post("/api/transcriptions/batch", {"fiche_ids": ["L1", "E1", "X"]}, format="json")
    assert too_many.status_code == 400 and "TRANSCRIPTION_BATCH_MAX" in str(too_many.json()["error"])
    denied = client.post("/api/transcriptions/batch", {"fiche_ids": ["L1", "P1"]}, format="json")
    assert denied.status_code == 403 and denied.json()["error"]["details"]["fiche_ids"] == ["P1"]
    # A foreign cached fiche and one nobody knows are refused alike (listed as given, nothing else said).
    both = client.post("/api/transcriptions/batch", {"fiche_ids": ["P1", "2225998"]}, format="json")
    assert both.status_code == 403 and both.json()["error"]["details"] == {"fiche_ids": ["P1", "2225998"]}
    with django_capture_on_commit_callbacks(execute=True):
        ok = client.post("/api/transcriptions/batch", {"fiche_ids": ["L1", "E1", "L1"]}, format="json")
    assert ok.status_code == 202
    batch = Batch.objects.get(pk=ok.json()["batch_id"])
    assert (batch.total, batch.operation_type, batch.options) == (2, "transcription", {"priority": "normal"})
    assert [t.name for t in queued_tasks("default")] == ["batches.tasks.batch_start"]
    shown = client.get(f"/api/batches/{batch.pk}").json()
    assert (shown["status"], shown["total"], shown["completed"], shown["failed"]) == ("running", 2, 0, 0)
    assert client.get("/api/batches/not-a-uuid").status_code == 404


def _run_for(fiche: FicheCache) -> TranscriptionRun:
    result = runs.transcription_request(fiche=fiche)
    return TranscriptionRun.objects.get(pk=result.run_id)


def test_the_updater_applies_outcomes_once_and_ends_the_run_once(fiches):
    run = _run_for(fiches["L1"])
    runs.run_dispatch(run_id=str(run.pk))
    first = runs.run_apply_outcomes(run_id=str(run.pk), outcomes=[("c-L1-1", True, None), ("c-L1-1", True, None)])
    assert first.changed and not first.finalized and first.remaining == ["c-L1-2"]
    dup = runs.run_apply_outcomes(run_id=str(run.pk), outcomes=[("c-L1-1", False, "late failure")])
    assert not dup.changed  # a success is final
    last = runs.run_apply_outcomes(run_id=str(run.pk), outcomes=[("c-L1-2", False, "HTTP 500")])
    assert last.finalized and last.status == "partial"
    assert runs.run_finalize_if_done(run_id=str(run.pk)) is False
    assert runs.run_finalize_now(run_id=str(run.pk), reason="x") is False
    run.refresh_from_db()
    assert (run.status, run.done_call_ids, run.failed_call_ids) == ("partial", ["c-L1-1"], ["c-L1-2"])
    assert "HTTP 500" in run.error


def test_the_reconciler_redrives_a_stalled_run_and_times_out_one_without_progress(fiches, settings):
    settings.TRANSCRIPTION_STALL_SECONDS = 60
    settings.TRANSCRIPTION_DEADLINE_SECONDS = 600
    stalled, silent = _run_for(fiches["L1"]), _run_for(fiches["P1"])
    for run in (stalled, silent):
        runs.run_dispatch(run_id=str(run.pk))
    now = timezone.now()
    TranscriptionRun.objects.filter(pk=stalled.pk).update(last_progress_at=now - timedelta(seconds=61))
    TranscriptionRun.objects.filter(pk=silent.pk).update(last_progress_at=now - timedelta(seconds=601))
    actions = runs.run_reconcile(now=now)
    assert actions == {"redrive": [str(stalled.pk)], "finalized": [], "timed_out": [str(silent.pk)], "recordings": []}
    silent.refresh_from_db()
    assert silent.status == "failed" and "timed out" in silent.error
    assert set(Transcription.objects.filter(run=silent).values_list("status", flat=True)) == {"failed"}
    assert runs.run_reconcile(now=now + timedelta(seconds=1))["redrive"] == []  # once per stall period


def test_a_dead_workers_recordings_are_sent_again_without_waiting_for_the_stall(fiches, settings):
    from config.celery import app
    from transcriptions.tasks import transcribe_recording

    settings.CLAIM_LEASE_SECONDS = 30
    run = _run_for(fiches["L1"])
    run_id = str(run.pk)
    runs.run_dispatch(run_id=run_id)
    row, reason = runs.recording_claim(run_id=run_id, call_id="c-L1-1")
    assert row is not None and reason is None
    assert runs.recording_claim(run_id=run_id, call_id="c-L1-1") == (None, runs.BEING_TRANSCRIBED)
    now = timezone.now()
    TranscriptionRun.objects.filter(pk=run.pk).update(last_progress_at=now - timedelta(seconds=10))
    Transcription.objects.filter(pk=row.pk).update(claimed_at=now - timedelta(seconds=31))  # its worker died
    actions = runs.run_reconcile(now=now)
    assert actions["recordings"] == [f"{run_id}:c-L1-1"] and actions["redrive"] == []
    assert runs.claim_lease(row).renew()  # a live worker's heartbeat: nothing to send
    assert runs.run_reconcile(now=now)["recordings"] == []
    # A stale holder's writes are fenced: another worker took the recording over.
    taken = Transcription.objects.get(pk=row.pk)
    Transcription.objects.filter(pk=row.pk).update(claim_token="someone-else")
    assert runs.recording_fail(run_id=run_id, call_id="c-L1-1", error="late", token=row.claim_token).skipped
    assert Transcription.objects.get(pk=row.pk).status == taken.status == "processing"

    # Idle for a lease with nothing held: its recordings' messages were lost (none waits in its queue).
    Transcription.objects.filter(pk=row.pk).update(status="pending", claimed_at=None, claim_token=None)
    TranscriptionRun.objects.filter(pk=run.pk).update(last_progress_at=now - timedelta(seconds=45))
    assert sorted(runs.run_reconcile(now=now)["recordings"]) == [f"{run_id}:c-L1-1", f"{run_id}:c-L1-2"]
    transcribe_recording.apply_async(args=(run_id, "c-L1-1"), queue="stt")  # one waits in the queue
    assert runs.run_reconcile(now=now)["recordings"] == []
    app.control.purge()
