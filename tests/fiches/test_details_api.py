"""GET /api/fiches/{fiche_id} and GET /api/recordings/{fiche_id} against the simulator over HTTP,
and the fiche_fetch Celery task run in-process."""

from __future__ import annotations

import json
import threading
from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection

from fiches.models import FicheCache, FicheCacheDetails, FicheCacheMailDevis, Recording
from fiches.services.cache import cache_fiche_sales_summaries
from fiches.services.details import fiche_ensure_details
from fiches.tasks import fiche_fetch
from tests.fiches.conftest import SimData, crm_calls

pytestmark = pytest.mark.django_db

SIM = SimData()
LYON2 = SIM.find(lambda s: s["groupe"] == "Lyon-2" and s["crm_user_id"] != "u-417" and len(s["recordings"]) >= 2)
PARIS = SIM.find(lambda s: s["groupe"] == "Paris-Est" and s["recordings"])
OWN = SIM.find(lambda s: s["crm_user_id"] == "u-417")  # the SELF user's sale
T1 = datetime(2026, 2, 3, 12, 0, tzinfo=UTC)


def fiche_url(fiche_id: str) -> str:
    return f"/api/fiches/{fiche_id}"


def recordings_url(fiche_id: str) -> str:
    return f"/api/recordings/{fiche_id}"


def cache_sales_list_of(sale: dict) -> None:
    """Cache the simulator's sales list of the sale's date (sales-list-only rows)."""
    day = date.fromisoformat(sale["sales_date"])
    cache_fiche_sales_summaries(SIM.sales(day), revalidated_at=T1, covered_dates=[day])


def without_mail(fiche: dict) -> dict:
    return {k: v for k, v in fiche.items() if k != "mail_devis"}


def json_round_trip(value):
    return json.loads(json.dumps(value))


def error_code(response) -> str:
    return response.json()["error"]["code"]


@pytest.fixture
def as_reader(auth_client, reader):
    return auth_client(reader)


@pytest.fixture
def as_writer(auth_client, writer):
    return auth_client(writer)


# --- Cache miss, cache hit ----------------------------------------------------------------------------


def test_cache_miss_fetches_from_the_crm_and_persists(crm, as_reader):
    fiche_id = LYON2["fiche_id"]
    response = as_reader.get(fiche_url(fiche_id))

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["meta"]["source"] == "crm"
    assert body["meta"]["hasDetails"] is True and body["meta"]["stale"] is False
    assert body["meta"]["detailsFetchedAt"] is not None
    assert len(crm_calls(crm, by_id=fiche_id)) == 1 and len(crm_calls(crm)) == 1
    assert FicheCacheDetails.objects.filter(fiche__fiche_id=fiche_id).exists()
    assert FicheCacheMailDevis.objects.filter(fiche__fiche_id=fiche_id).exists()
    original = SIM.details(fiche_id)
    assert (body["success"], body["message"], body["cle"]) == (True, "OK", original["cle"])
    assert body["fiche"] == json_round_trip(without_mail(original["fiche"]))
    assert "mail_devis" not in body["fiche"]


def test_second_get_is_served_from_the_cache(crm, as_reader):
    fiche_id = LYON2["fiche_id"]
    first = as_reader.get(fiche_url(fiche_id)).json()
    crm.clear_requests()

    response = as_reader.get(fiche_url(fiche_id))
    assert response.status_code == 200
    body = response.json()
    assert body["meta"]["source"] == "cache"
    assert crm_calls(crm) == []
    assert body["fiche"] == first["fiche"]
    assert body["meta"]["detailsFetchedAt"] == first["meta"]["detailsFetchedAt"]


def test_sales_list_only_cache_fetches_the_details(crm, as_reader):
    cache_sales_list_of(LYON2)
    fiche_id = LYON2["fiche_id"]
    assert FicheCache.objects.get(fiche_id=fiche_id).details_fetched_at is None

    response = as_reader.get(fiche_url(fiche_id))
    assert response.status_code == 200
    body = response.json()
    assert body["meta"]["source"] == "crm" and body["meta"]["hasDetails"] is True
    assert body["meta"]["lastRevalidatedAt"] is not None  # the list's revalidation is kept
    assert len(crm_calls(crm, by_id=fiche_id)) == 1
    assert FicheCacheDetails.objects.filter(fiche__fiche_id=fiche_id).exists()
    assert body["fiche"] == json_round_trip(without_mail(SIM.details(fiche_id)["fiche"]))


def test_include_mail_devis(crm, as_reader):
    fiche_id = LYON2["fiche_id"]
    original = SIM.details(fiche_id)["fiche"]["mail_devis"]

    fetched = as_reader.get(fiche_url(fiche_id), {"include_mail_devis": "true"}).json()
    assert fetched["meta"]["source"] == "crm" and fetched["fiche"]["mail_devis"] == original
    cached = as_reader.get(fiche_url(fiche_id), {"include_mail_devis": "true"}).json()
    assert cached["meta"]["source"] == "cache" and cached["fiche"]["mail_devis"] == original
    assert list(cached["fiche"])[-2:] == ["mail_devis", "recordings"]  # the gateway's section order
    plain = as_reader.get(fiche_url(fiche_id)).json()
    assert "mail_devis" not in plain["fiche"]
    explicit = as_reader.get(fiche_url(fiche_id), {"include_mail_devis": "false"}).json()
    assert "mail_devis" not in explicit["fiche"]


def test_invalid_query_parameter_is_a_validation_error(crm, as_reader):
    response = as_reader.get(fiche_url(LYON2["fiche_id"]), {"refresh": "maybe"})
    assert response.status_code == 400
    assert error_code(response) == "validation_error"
    assert crm_calls(crm) == []


# --- Forced refresh -----------------------------------------------------------------------------------


def test_refresh_needs_fiches_write(crm, as_reader):
    response = as_reader.get(fiche_url(LYON2["fiche_id"]), {"refresh": "true"})
    assert response.status_code == 403
    assert error_code(response) == "permission_denied"
    assert crm_calls(crm) == []


def test_refresh_inside_the_cooldown_is_skipped(crm, as_writer, settings):
    settings.FICHE_FORCE_REFRESH_COOLDOWN_MS = 60_000
    fiche_id = LYON2["fiche_id"]
    first = as_writer.get(fiche_url(fiche_id)).json()
    crm.clear_requests()

    response = as_writer.get(fiche_url(fiche_id), {"refresh": "true"})
    assert response.status_code == 200
    meta = response.json()["meta"]
    assert meta["refreshSkipped"] is True and meta["source"] == "cache" and meta["stale"] is False
    assert meta["nextRefreshAllowedAt"] is not None
    fetched_at = datetime.fromisoformat(first["meta"]["detailsFetchedAt"])
    assert datetime.fromisoformat(meta["nextRefreshAllowedAt"]) == fetched_at + timedelta(seconds=60)
    assert crm_calls(crm) == []


def test_refresh_outside_the_cooldown_refetches(crm, as_writer, settings):
    settings.FICHE_FORCE_REFRESH_COOLDOWN_MS = 0
    fiche_id = LYON2["fiche_id"]
    first = as_writer.get(fiche_url(fiche_id)).json()
    crm.clear_requests()
    crm.config.revision = 1  # whatever changed upstream comes through

    response = as_writer.get(fiche_url(fiche_id), {"refresh": "true"})
    assert response.status_code == 200
    body = response.json()
    assert body["meta"]["source"] == "crm" and body["meta"]["refreshSkipped"] is False
    assert len(crm_calls(crm, by_id=fiche_id)) == 1
    assert body["meta"]["detailsFetchedAt"] > first["meta"]["detailsFetchedAt"]
    revised = SimData(revision=1).details(fiche_id)["fiche"]
    assert body["fiche"]["information"] == revised["information"]


# --- Not found, CRM down --------------------------------------------------------------------------------


@pytest.mark.parametrize("fiche_id", [SIM.unknown_fiche_id(), "999999999"])
def test_unknown_fiche_is_404(crm, as_reader, fiche_id):
    response = as_reader.get(fiche_url(fiche_id))
    assert response.status_code == 404
    assert error_code(response) == "fiche_not_found"
    assert len(crm_calls(crm, by_id=fiche_id)) == 1
    assert not FicheCache.objects.filter(fiche_id=fiche_id).exists()


def test_crm_down_and_nothing_cached_is_503(dead_crm, as_reader):
    response = as_reader.get(fiche_url(LYON2["fiche_id"]))
    assert response.status_code == 503
    assert error_code(response) == "crm_unavailable"
    assert not FicheCache.objects.exists()


def test_crm_failing_the_date_and_details_cached_serves_stale(crm, as_writer, settings):
    settings.FICHE_FORCE_REFRESH_COOLDOWN_MS = 0
    fiche_id = LYON2["fiche_id"]
    first = as_writer.get(fiche_url(fiche_id)).json()
    crm.config.fail_dates = frozenset({date.fromisoformat(LYON2["sales_date"])})
    crm.clear_requests()

    response = as_writer.get(fiche_url(fiche_id), {"refresh": "true"})
    assert response.status_code == 200
    body = response.json()
    assert body["meta"]["stale"] is True and body["meta"]["staleReason"]
    assert body["meta"]["source"] == "cache" and body["meta"]["hasDetails"] is True
    assert body["fiche"] == first["fiche"]
    assert [c["status"] for c in crm_calls(crm, by_id=fiche_id)] == [503]


def test_crm_unreachable_and_details_cached_serves_stale(crm, as_writer, settings, dead_crm_url):
    settings.FICHE_FORCE_REFRESH_COOLDOWN_MS = 0
    fiche_id = LYON2["fiche_id"]
    first = as_writer.get(fiche_url(fiche_id)).json()
    settings.CRM_BASE_URL = dead_crm_url

    response = as_writer.get(fiche_url(fiche_id), {"refresh": "true"})
    assert response.status_code == 200
    body = response.json()
    assert body["meta"]["stale"] is True and body["fiche"] == first["fiche"]


def test_crm_down_and_sales_list_only_serves_the_stale_summary(dead_crm, as_reader):
    cache_sales_list_of(LYON2)
    response = as_reader.get(fiche_url(LYON2["fiche_id"]))
    assert response.status_code == 200
    body = response.json()
    assert body["meta"]["stale"] is True and body["meta"]["hasDetails"] is False
    assert body["meta"]["source"] == "cache"
    assert body["message"] == "Sales list only"
    information = body["fiche"]["information"]
    assert (information["fiche_id"], information["groupe"], information["statut"]) == (
        LYON2["fiche_id"],
        LYON2["groupe"],
        LYON2["statut"],
    )
    assert body["fiche"]["recordings"] == LYON2["recordings"]


# --- Scope ----------------------------------------------------------------------------------------------


def test_group_user_sees_their_group(crm, auth_client, group_user):
    cache_sales_list_of(LYON2)  # the range read that lists it: its groupe is known before any details fetch
    response = auth_client(group_user).get(fiche_url(LYON2["fiche_id"]))
    assert response.status_code == 200
    assert response.json()["fiche"]["information"]["groupe"] == "Lyon-2"
    assert len(crm_calls(crm, by_id=LYON2["fiche_id"])) == 1  # details fetched once the scope was checked


def test_group_user_denied_a_cached_fiche_of_another_group_without_a_crm_call(crm, auth_client, group_user):
    cache_sales_list_of(PARIS)
    response = auth_client(group_user).get(fiche_url(PARIS["fiche_id"]))
    assert response.status_code == 403
    assert error_code(response) == "scope_denied"
    assert crm_calls(crm) == []
    assert "fiche" not in response.json()


def test_an_uncached_fiche_is_refused_to_a_group_user_as_an_unknown_one_without_a_crm_call(
    crm, auth_client, group_user
):
    """Scope before any CRM fetch or cache write: a non-ALL user cannot make us fetch a fiche we cannot prove
    is theirs, and the refusal of a foreign id is the refusal of an id that does not exist."""
    fiche_id = PARIS["fiche_id"]
    response = auth_client(group_user).get(fiche_url(fiche_id))
    assert response.status_code == 403
    assert error_code(response) == "scope_denied"
    assert "fiche" not in response.json() and PARIS["prospect"]["nom"] not in response.content.decode()
    assert crm_calls(crm) == [] and not FicheCache.objects.filter(fiche_id=fiche_id).exists()
    unknown = auth_client(group_user).get(fiche_url("9999999"))
    assert unknown.status_code == 403
    assert unknown.json()["error"]["message"].replace("9999999", fiche_id) == response.json()["error"]["message"]
    cache_sales_list_of(PARIS)  # once cached, a foreign fiche gets that same answer
    foreign = auth_client(group_user).get(fiche_url(fiche_id))
    assert foreign.status_code == 403 and foreign.json() == response.json()
    assert crm_calls(crm) == []


def test_self_user_sees_only_their_fiches(crm, auth_client, self_user):
    client = auth_client(self_user)
    cache_sales_list_of(OWN)
    own = client.get(fiche_url(OWN["fiche_id"]))
    assert own.status_code == 200
    assert own.json()["fiche"]["information"]["crm_user_id"] == "u-417"

    other = client.get(fiche_url(LYON2["fiche_id"]))  # same group, another agent
    assert other.status_code == 403 and error_code(other) == "scope_denied"
    cache_sales_list_of(PARIS)
    assert client.get(fiche_url(PARIS["fiche_id"])).status_code == 403


def test_no_token_is_401(crm, api_client):
    response = api_client.get(fiche_url(LYON2["fiche_id"]))
    assert response.status_code == 401
    assert crm_calls(crm) == []
    assert api_client.get(recordings_url(LYON2["fiche_id"])).status_code == 401


def test_without_fiches_read_is_403(crm, auth_client, make_role, make_user):
    user = make_user(make_role("rec-only", recordings=("r", "ALL")))
    response = auth_client(user).get(fiche_url(LYON2["fiche_id"]))
    assert response.status_code == 403 and error_code(response) == "permission_denied"
    assert crm_calls(crm) == []


# --- Recordings -----------------------------------------------------------------------------------------


def test_recordings_in_the_gateway_shape(crm, as_reader):
    cache_sales_list_of(LYON2)
    response = as_reader.get(recordings_url(LYON2["fiche_id"]))
    assert response.status_code == 200
    body = response.json()
    assert body == {"fiche_id": LYON2["fiche_id"], "count": len(LYON2["recordings"]), "recordings": LYON2["recordings"]}
    assert crm_calls(crm) == []


def test_recordings_of_a_fiche_without_calls(crm, as_reader):
    silent = SIM.find(lambda s: not s["recordings"])
    cache_sales_list_of(silent)
    body = as_reader.get(recordings_url(silent["fiche_id"])).json()
    assert body == {"fiche_id": silent["fiche_id"], "count": 0, "recordings": []}


def test_recordings_need_recordings_read(crm, auth_client, make_role, make_user):
    cache_sales_list_of(LYON2)
    user = make_user(make_role("fiches-only", fiches=("r", "ALL")))
    response = auth_client(user).get(recordings_url(LYON2["fiche_id"]))
    assert response.status_code == 403
    assert error_code(response) == "permission_denied"


def test_recordings_scope_is_enforced(crm, auth_client, group_user):
    cache_sales_list_of(LYON2)
    cache_sales_list_of(PARIS)
    client = auth_client(group_user)
    assert client.get(recordings_url(LYON2["fiche_id"])).status_code == 200
    response = client.get(recordings_url(PARIS["fiche_id"]))
    assert response.status_code == 403
    assert error_code(response) == "scope_denied"


def test_recordings_of_an_unknown_fiche_is_404(crm, as_reader):
    response = as_reader.get(recordings_url("999999999"))
    assert response.status_code == 404
    assert error_code(response) == "fiche_not_found"
    assert crm_calls(crm) == []


# --- Celery task ----------------------------------------------------------------------------------------


def db_state(fiche_id: str) -> dict:
    return {
        "fiche": list(FicheCache.objects.filter(fiche_id=fiche_id).values()),
        "details": list(FicheCacheDetails.objects.filter(fiche__fiche_id=fiche_id).values()),
        "mail_devis": list(FicheCacheMailDevis.objects.filter(fiche__fiche_id=fiche_id).values()),
        "recordings": list(Recording.objects.filter(fiche__fiche_id=fiche_id).order_by("call_id").values()),
    }


def test_fiche_fetch_task_is_idempotent(crm):
    fiche_id = LYON2["fiche_id"]
    first = fiche_fetch.apply(args=[fiche_id]).get()
    assert first == {
        "fiche_id": fiche_id,
        "fetched": True,
        "refresh_skipped": False,
        "recordings": len(LYON2["recordings"]),
    }
    state = db_state(fiche_id)
    assert state["details"] and len(state["recordings"]) == len(LYON2["recordings"])

    second = fiche_fetch.apply(args=[fiche_id]).get()
    assert second == {**first, "fetched": False}
    assert db_state(fiche_id) == state
    assert len(crm_calls(crm, by_id=fiche_id)) == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_fetches_of_one_fiche_call_the_crm_once(crm):
    crm.config.latency_ms = 300
    fiche_id = LYON2["fiche_id"]
    barrier = threading.Barrier(3)
    fetched, errors = [], []

    def fetch() -> None:
        try:
            barrier.wait(timeout=5)
            fetched.append(fiche_ensure_details(fiche_id=fiche_id, wait=10).fetched)
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=fetch) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert errors == []
    assert sorted(fetched) == [False, False, True]
    assert len(crm_calls(crm, by_id=fiche_id)) == 1
    assert FicheCache.objects.filter(fiche_id=fiche_id).count() == 1


@pytest.mark.parametrize("suffix", ["%20", "%09"])
def test_a_padded_fiche_id_does_not_bypass_the_cache(crm, as_reader, suffix):
    fiche_id = LYON2["fiche_id"]
    assert as_reader.get(fiche_url(fiche_id)).status_code == 200
    crm.clear_requests()
    for _ in range(2):
        response = as_reader.get(fiche_url(fiche_id + suffix))
        assert response.status_code in (200, 404)
    assert crm_calls(crm) == []
