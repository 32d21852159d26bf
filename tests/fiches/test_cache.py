"""Invariants of the fiche cache writes (fiches.services.cache) and reads (fiches.selectors)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime, timedelta

import orjson
import pytest
from django.db.models import Count

from fiches.clients import crm as client
from fiches.models import (
    FicheCache,
    FicheCacheDetails,
    FicheCacheMailDevis,
    Recording,
    SalesDateState,
)
from fiches.selectors import (
    date_range_coverage,
    fiche_payload,
    fiches_for_range,
    recordings_for,
)
from fiches.services.cache import (
    SALES_LIST_ONLY,
    cache_fiche_sales_summaries,
    fiche_details_persist,
    record_sales_date_error,
)
from tests.fiches.conftest import FIRST_DAY

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True, params=["json", "copy"])
def row_transport(request, monkeypatch):
    """Every invariant holds on both ways a list's rows reach Postgres: a bound JSON parameter (small
    lists, as a day's) and COPY into temporary tables (large ones)."""
    if request.param == "copy":
        monkeypatch.setattr("fiches.services.cache._COPY_ABOVE_ROWS", 0)
    return request.param


T0 = datetime(2026, 2, 3, 8, 0, tzinfo=UTC)
T1 = datetime(2026, 2, 3, 12, 0, tzinfo=UTC)
T2 = datetime(2026, 2, 4, 12, 0, tzinfo=UTC)
DAYS = [FIRST_DAY + timedelta(days=n) for n in range(3)]


def days_sales(sim_data, days=DAYS) -> list[dict]:
    return [sale for day in days for sale in sim_data.sales(day)]


def snapshot() -> dict[str, list[dict]]:
    return {
        "fiches": list(FicheCache.objects.order_by("fiche_id").values()),
        "details": list(FicheCacheDetails.objects.order_by("fiche_id").values()),
        "mail_devis": list(FicheCacheMailDevis.objects.order_by("fiche_id").values()),
        "recordings": list(Recording.objects.order_by("call_id").values()),
        "dates": list(SalesDateState.objects.order_by("sales_date").values()),
    }


def assert_recording_counts_consistent() -> None:
    rows = FicheCache.objects.annotate(n=Count("recordings")).values_list(
        "fiche_id", "recordings_count", "has_recordings", "n"
    )
    for fiche_id, count, has, stored in rows:
        assert (count, has) == (stored, stored > 0), fiche_id


def rec(call_id: str, started_at: str = "2026-02-02T10:00:00Z", **extra) -> dict:
    return {
        "call_id": call_id,
        "recording_url": f"https://recordings.example/{call_id}.mp3",
        "started_at": started_at,
        "duration_seconds": 60,
        "direction": "outbound",
        "from_number": "0472560417",
        "to_number": "0612345678",
        **extra,
    }


def sale(fiche_id: str, day: date = FIRST_DAY, *, recordings=None, **fields) -> dict:
    item = {
        "fiche_id": fiche_id,
        "cle": "abc123",
        "sales_date": day.isoformat(),
        "groupe": "Lyon-2",
        "crm_user_id": "u-417",
        "agent_name": "Julien Thomas",
        "statut": "Vente validée",
        "produit": "Santé Sérénité",
        "montant_cotisation": 84.5,
        "prospect": {"civilite": "Mme", "nom": "Durand", "prenom": "Julie"},
        **fields,
    }
    if recordings is not None:
        item["recordings"] = recordings
    return item


def other_statut(statut: str) -> str:
    return "Vente annulée" if statut != "Vente annulée" else "Vente validée"


def json_round_trip(value):
    return json.loads(json.dumps(value))


# --- (a) details survive a sales-list refresh -------------------------------------------------------


def test_details_survive_a_sales_list_refresh(crm, sim_data):
    target = sim_data.find(lambda s: s["recordings"])
    fiche_id = target["fiche_id"]
    envelope = client.fetch_fiche_details(fiche_id)
    fiche_details_persist(envelope=envelope, fetched_at=T0)
    before = FicheCache.objects.get(fiche_id=fiche_id)
    details_before = FicheCacheDetails.objects.filter(fiche=before).values().get()
    mail_before = FicheCacheMailDevis.objects.filter(fiche=before).values().get()
    assert before.raw_data[SALES_LIST_ONLY] is False

    sales = copy.deepcopy(sim_data.sales(date.fromisoformat(target["sales_date"])))
    [changed] = [s for s in sales if s["fiche_id"] == fiche_id]
    new_statut = other_statut(changed["statut"])
    changed["statut"] = new_statut
    changed["prospect"]["nom"] = "Nouveau-Nom"
    cache_fiche_sales_summaries(sales, revalidated_at=T1)

    after = FicheCache.objects.get(fiche_id=fiche_id)
    assert FicheCacheDetails.objects.filter(fiche=after).values().get() == details_before
    assert FicheCacheMailDevis.objects.filter(fiche=after).values().get() == mail_before
    assert after.raw_data == before.raw_data
    assert after.details_fetched_at == before.details_fetched_at == T0
    assert (after.details_success, after.details_message) == (before.details_success, before.details_message)
    assert after.statut == new_statut != before.statut
    assert after.prospect_nom == "Nouveau-Nom"
    assert before.last_revalidated_at is None and after.last_revalidated_at == T1
    # the full details are still what fiche_payload serves
    payload = fiche_payload(after)
    assert payload["message"] == "OK"
    assert payload["fiche"]["information"]["statut"] == envelope["fiche"]["information"]["statut"]

    cache_fiche_sales_summaries(sales, revalidated_at=T2)
    again = FicheCache.objects.get(fiche_id=fiche_id)
    assert again.last_revalidated_at == T2
    assert again.raw_data == before.raw_data
    assert FicheCacheDetails.objects.filter(fiche=again).values().get() == details_before


def test_sales_list_only_rows_follow_the_list(sim_data):
    sales = copy.deepcopy(sim_data.sales(FIRST_DAY))
    cache_fiche_sales_summaries(sales, revalidated_at=T1)
    first = sales[0]
    row = FicheCache.objects.get(fiche_id=first["fiche_id"])
    expected_raw = {k: v for k, v in first.items() if k != "recordings"} | {SALES_LIST_ONLY: True}
    assert json_round_trip(row.raw_data) == json_round_trip(expected_raw)
    assert row.details_fetched_at is None

    first["statut"] = other_statut(first["statut"])
    first["montant_cotisation"] = 1.5
    cache_fiche_sales_summaries(sales, revalidated_at=T1)  # same revalidated_at: content still moves
    row.refresh_from_db()
    assert row.statut == first["statut"]
    assert row.raw_data["montant_cotisation"] == 1.5


# --- (b) idempotent -----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_same_list_twice_leaves_identical_rows(sim_data):
    """Each call commits (its own now()), so an upsert that touched a row would move updated_at."""
    detailed = sim_data.sales(FIRST_DAY)[1]["fiche_id"]
    fiche_details_persist(envelope=sim_data.details(detailed), fetched_at=T0)
    sales = days_sales(sim_data)
    covered = DAYS + [DAYS[-1] + timedelta(days=1)]

    cache_fiche_sales_summaries(sales, revalidated_at=T1, covered_dates=covered)
    first = snapshot()
    cache_fiche_sales_summaries(sales, revalidated_at=T1, covered_dates=covered)
    second = snapshot()

    assert first["fiches"] and first["recordings"] and len(first["dates"]) == len(covered)
    assert second == first


# --- (c) recordings_count / has_recordings ------------------------------------------------------------


def test_recording_counts_match_stored_recordings(sim_data):
    sales = days_sales(sim_data)
    cache_fiche_sales_summaries(sales, revalidated_at=T1)
    assert_recording_counts_consistent()
    assert Recording.objects.count() == sum(len(s["recordings"]) for s in sales)
    assert FicheCache.objects.filter(has_recordings=False).exists()  # the data has fiches without calls
    for s in sales:
        assert FicheCache.objects.get(fiche_id=s["fiche_id"]).recordings_count == len(s["recordings"])


def test_recording_counts_after_a_list_adds_a_recording(sim_data):
    sales = copy.deepcopy(sim_data.sales(FIRST_DAY))
    cache_fiche_sales_summaries(sales, revalidated_at=T1)
    target = sales[0]
    before = FicheCache.objects.get(fiche_id=target["fiche_id"]).recordings_count

    target["recordings"].append(rec(f"c-new-{target['fiche_id']}", started_at="2026-02-02T19:30:00Z"))
    cache_fiche_sales_summaries(sales, revalidated_at=T2)

    row = FicheCache.objects.get(fiche_id=target["fiche_id"])
    assert row.recordings_count == before + 1 and row.has_recordings
    assert_recording_counts_consistent()


def test_recording_counts_after_a_simulator_revision(crm, sim_data):
    """Revision 1 of the simulator adds recordings to some sales; a refetch picks them up."""
    days = DAYS + [FIRST_DAY + timedelta(days=n) for n in range(3, 10)]
    base = client.fetch_sales_with_calls(days[0], days[-1])
    cache_fiche_sales_summaries(base, revalidated_at=T1, covered_dates=days)
    crm.config.revision = 1
    revised = client.fetch_sales_with_calls(days[0], days[-1])
    grown = {s["fiche_id"] for s, b in zip(revised, base, strict=True) if len(s["recordings"]) > len(b["recordings"])}
    assert grown, "the revision should add a recording to some sale"

    cache_fiche_sales_summaries(revised, revalidated_at=T2, covered_dates=days)
    for s in revised:
        assert FicheCache.objects.get(fiche_id=s["fiche_id"]).recordings_count == len(s["recordings"])
    assert_recording_counts_consistent()


def test_recording_moving_to_another_fiche_updates_both_counts():
    cache_fiche_sales_summaries(
        [sale("9001", recordings=[rec("c-1"), rec("c-2")]), sale("9002", recordings=[rec("c-3")])], revalidated_at=T1
    )
    assert FicheCache.objects.get(fiche_id="9001").recordings_count == 2

    # c-2 now belongs to 9002 (the list of 9001 no longer carries it)
    cache_fiche_sales_summaries(
        [sale("9001", recordings=[rec("c-1")]), sale("9002", recordings=[rec("c-3"), rec("c-2")])], revalidated_at=T2
    )
    assert Recording.objects.get(call_id="c-2").fiche.fiche_id == "9002"
    counts = dict(FicheCache.objects.values_list("fiche_id", "recordings_count"))
    assert counts == {"9001": 1, "9002": 2}
    assert_recording_counts_consistent()


def test_recording_moving_to_a_new_fiche_and_leaving_its_owner_empty():
    cache_fiche_sales_summaries([sale("9001", recordings=[rec("c-1")])], revalidated_at=T1)
    # a list holding only the new owner: the old one is not in it, yet its count must drop
    cache_fiche_sales_summaries([sale("9003", recordings=[rec("c-1")])], revalidated_at=T2)
    old, new = FicheCache.objects.get(fiche_id="9001"), FicheCache.objects.get(fiche_id="9003")
    assert (old.recordings_count, old.has_recordings) == (0, False)
    assert (new.recordings_count, new.has_recordings) == (1, True)
    assert_recording_counts_consistent()


def test_details_persist_keeps_recording_counts_consistent(crm, sim_data):
    target = sim_data.find(lambda s: len(s["recordings"]) >= 2)
    cache_fiche_sales_summaries(sim_data.sales(date.fromisoformat(target["sales_date"])), revalidated_at=T1)
    envelope = client.fetch_fiche_details(target["fiche_id"])
    envelope["fiche"]["recordings"].append(rec("c-extra", started_at="2026-02-02T20:00:00Z"))
    row = fiche_details_persist(envelope=envelope)
    assert row.recordings_count == len(target["recordings"]) + 1
    assert_recording_counts_consistent()


# --- (d) last_revalidated_at --------------------------------------------------------------------------


def test_last_revalidated_at_is_bumped_and_never_moves_back(sim_data):
    day1, day2 = sim_data.sales(DAYS[0]), sim_data.sales(DAYS[1])
    cache_fiche_sales_summaries(day1 + day2, revalidated_at=T1)
    assert set(FicheCache.objects.values_list("last_revalidated_at", flat=True)) == {T1}

    cache_fiche_sales_summaries(day1, revalidated_at=T2)
    values = dict(FicheCache.objects.values_list("fiche_id", "last_revalidated_at"))
    assert all(values[s["fiche_id"]] == T2 for s in day1)
    assert all(values[s["fiche_id"]] == T1 for s in day2)  # not in the list: untouched

    cache_fiche_sales_summaries(day1 + day2, revalidated_at=T0)  # older than both
    values = dict(FicheCache.objects.values_list("fiche_id", "last_revalidated_at"))
    assert all(values[s["fiche_id"]] == T2 for s in day1)
    assert all(values[s["fiche_id"]] == T1 for s in day2)
    assert SalesDateState.objects.get(sales_date=DAYS[0]).last_fetched_at == T2


def test_last_revalidated_at_is_set_on_a_detailed_fiche(sim_data):
    target = sim_data.sales(FIRST_DAY)[0]
    fiche_details_persist(envelope=sim_data.details(target["fiche_id"]), fetched_at=T0)
    cache_fiche_sales_summaries(sim_data.sales(FIRST_DAY), revalidated_at=T1)
    assert FicheCache.objects.get(fiche_id=target["fiche_id"]).last_revalidated_at == T1


# --- (e) recordings are never deleted -----------------------------------------------------------------


def test_recordings_are_never_deleted_by_a_later_list(sim_data):
    sales = days_sales(sim_data, DAYS[:2])
    cache_fiche_sales_summaries(sales, revalidated_at=T1)
    recordings_before = list(Recording.objects.order_by("call_id").values_list("call_id", "fiche__fiche_id"))
    counts_before = dict(FicheCache.objects.values_list("fiche_id", "recordings_count"))
    assert recordings_before

    without = copy.deepcopy(sales)
    for s in without:
        s["recordings"] = []
    cache_fiche_sales_summaries(without, revalidated_at=T2)
    no_key = copy.deepcopy(sales)
    for s in no_key:
        del s["recordings"]
    cache_fiche_sales_summaries(no_key, revalidated_at=T2 + timedelta(hours=1))

    assert list(Recording.objects.order_by("call_id").values_list("call_id", "fiche__fiche_id")) == recordings_before
    assert dict(FicheCache.objects.values_list("fiche_id", "recordings_count")) == counts_before
    assert_recording_counts_consistent()


def test_an_empty_list_for_a_fiche_keeps_its_recordings_in_the_payload(sim_data):
    target = sim_data.find(lambda s: s["recordings"])
    cache_fiche_sales_summaries([target], revalidated_at=T1)
    cache_fiche_sales_summaries([{**target, "recordings": []}], revalidated_at=T2)
    row = FicheCache.objects.get(fiche_id=target["fiche_id"])
    assert recordings_for(row) == target["recordings"]


# --- (f) coverage -------------------------------------------------------------------------------------


def test_an_empty_day_counts_as_covered():
    day = date(2026, 2, 8)
    result = cache_fiche_sales_summaries([], revalidated_at=T1, covered_dates=[day])
    assert result.dates == [day] and result.fiches == 0
    coverage = date_range_coverage(day - timedelta(days=1), day + timedelta(days=1))
    assert coverage.covered == [day]
    assert coverage.missing == [day - timedelta(days=1), day + timedelta(days=1)]
    state = SalesDateState.objects.get(sales_date=day)
    assert (state.fiche_count, state.last_fetched_at, state.last_error) == (0, T1, None)


def test_a_recorded_error_alone_does_not_cover_a_date():
    day = date(2026, 2, 9)
    record_sales_date_error(day=day, error="CRM answered 503")
    coverage = date_range_coverage(day - timedelta(days=1), day + timedelta(days=1))
    assert coverage.covered == [] and not coverage.complete
    state = SalesDateState.objects.get(sales_date=day)
    assert state.last_error == "CRM answered 503" and state.last_fetched_at is None

    cache_fiche_sales_summaries([], revalidated_at=T1, covered_dates=[day])  # a later success clears the error
    assert date_range_coverage(day, day).covered == [day]
    state.refresh_from_db()
    assert state.last_error is None and state.last_error_at is None


def test_an_error_after_a_success_keeps_the_date_covered():
    day = date(2026, 2, 9)
    cache_fiche_sales_summaries([], revalidated_at=T1, covered_dates=[day])
    record_sales_date_error(day=day, error="timeout")
    assert date_range_coverage(day, day).covered == [day]


def test_a_fiche_fetched_by_id_does_not_cover_its_sales_date(sim_data):
    """One fiche's details say nothing about the date's other sales: the date stays missing until
    its sales list is fetched."""
    fiche_details_persist(envelope=sim_data.details(sim_data.sales(DAYS[1])[0]["fiche_id"]))
    assert not SalesDateState.objects.exists()
    coverage = date_range_coverage(DAYS[0], DAYS[2])
    assert coverage.covered == [] and coverage.missing == DAYS[:3]
    cache_fiche_sales_summaries(sim_data.sales(DAYS[1]), revalidated_at=T1, covered_dates=[DAYS[1]])
    assert date_range_coverage(DAYS[0], DAYS[2]).covered == [DAYS[1]]


def test_dates_default_to_the_sales_dates_of_the_list(sim_data):
    sales = days_sales(sim_data, DAYS[:2])
    result = cache_fiche_sales_summaries(sales, revalidated_at=T1)
    assert result.dates == DAYS[:2]
    counts = dict(SalesDateState.objects.values_list("sales_date", "fiche_count"))
    assert counts == {d: len(sim_data.sales(d)) for d in DAYS[:2]}


# --- (g) duplicates -----------------------------------------------------------------------------------


def test_duplicate_fiche_ids_in_one_list_last_wins():
    result = cache_fiche_sales_summaries(
        [
            sale("9001", statut="En attente de signature", recordings=[rec("c-1")]),
            sale("9002"),
            sale("9001", statut="Vente validée", recordings=[rec("c-2")]),
        ],
        revalidated_at=T1,
    )
    assert result.fiches == 2
    row = FicheCache.objects.get(fiche_id="9001")
    assert row.statut == "Vente validée"
    assert list(row.recordings.values_list("call_id", flat=True)) == ["c-2"]
    assert SalesDateState.objects.get(sales_date=FIRST_DAY).fiche_count == 2
    assert_recording_counts_consistent()


def test_duplicate_call_ids_in_one_list_last_wins():
    result = cache_fiche_sales_summaries(
        [
            sale("9001", recordings=[rec("c-1", duration_seconds=10), rec("c-1", duration_seconds=20)]),
            sale("9002", recordings=[rec("c-2")]),
            sale("9003", recordings=[rec("c-2", duration_seconds=99)]),
        ],
        revalidated_at=T1,
    )
    assert result.recordings == 2
    c1, c2 = Recording.objects.get(call_id="c-1"), Recording.objects.get(call_id="c-2")
    assert c1.fiche.fiche_id == "9001" and c1.duration_seconds == 20
    assert c2.fiche.fiche_id == "9003" and c2.duration_seconds == 99
    counts = dict(FicheCache.objects.values_list("fiche_id", "recordings_count"))
    assert counts == {"9001": 1, "9002": 0, "9003": 1}
    assert_recording_counts_consistent()


# --- (h) fiches_for_range -----------------------------------------------------------------------------


@pytest.fixture
def cached_days(sim_data):
    sales = days_sales(sim_data, DAYS + [DAYS[-1] + timedelta(days=1)])
    cache_fiche_sales_summaries(list(reversed(sales)), revalidated_at=T1)  # insertion order is not the order
    return sales


def expected_range(sales, start, end, keep=lambda s: True) -> list[tuple[str, str]]:
    return sorted(
        (s["sales_date"], s["fiche_id"])
        for s in sales
        if start.isoformat() <= s["sales_date"] <= end.isoformat() and keep(s)
    )


def as_keys(rows) -> list[tuple[str, str]]:
    return [(r["sales_date"].isoformat(), r["fiche_id"]) for r in rows]


def test_fiches_for_range_all_scope_is_ordered_plain_dicts(cached_days, reader):
    rows = fiches_for_range(reader, DAYS[0], DAYS[2])
    assert rows and all(type(r) is dict for r in rows)
    assert as_keys(rows) == expected_range(cached_days, DAYS[0], DAYS[2])
    first = rows[0]
    assert {
        "fiche_id",
        "sales_date",
        "groupe",
        "crm_user_id",
        "statut",
        "recordings_count",
        "has_recordings",
        "last_revalidated_at",
        "details_fetched_at",
    } <= first.keys()
    assert "raw_data" not in first
    orjson.dumps(rows)  # ready for orjson


def test_fiches_for_range_group_scope(cached_days, group_user):
    rows = fiches_for_range(group_user, DAYS[0], DAYS[2])
    expected = expected_range(cached_days, DAYS[0], DAYS[2], lambda s: s["groupe"] == "Lyon-2")
    assert expected and as_keys(rows) == expected
    assert {r["groupe"] for r in rows} == {"Lyon-2"}


def test_fiches_for_range_self_scope(cached_days, self_user, sim_data):
    end = DAYS[0] + timedelta(days=9)
    cache_fiche_sales_summaries(
        days_sales(sim_data, [DAYS[0] + timedelta(days=n) for n in range(4, 10)]), revalidated_at=T1
    )
    all_sales = days_sales(sim_data, [DAYS[0] + timedelta(days=n) for n in range(10)])
    rows = fiches_for_range(self_user, DAYS[0], end)
    expected = expected_range(all_sales, DAYS[0], end, lambda s: s["crm_user_id"] == "u-417")
    assert expected and as_keys(rows) == expected
    assert {r["crm_user_id"] for r in rows} == {"u-417"}


def test_fiches_for_range_group_user_without_groupes_sees_nothing(cached_days, make_role, make_user):
    role = make_role("group-no-groupes", fiches=("r", "GROUP"))
    user = make_user(role, groupes=[])
    assert fiches_for_range(user, DAYS[0], DAYS[-1]) == []


def test_fiches_for_range_without_the_grant_sees_nothing(cached_days, make_role, make_user):
    role = make_role("recordings-only", recordings=("r", "ALL"))
    assert fiches_for_range(make_user(role), DAYS[0], DAYS[-1]) == []


# --- (i) fiche_payload ---------------------------------------------------------------------------------


def test_fiche_payload_rebuilds_the_gateway_fiche(crm, sim_data):
    target = sim_data.find(lambda s: len(s["recordings"]) >= 2)
    fiche_id = target["fiche_id"]
    fiche_details_persist(envelope=client.fetch_fiche_details(fiche_id))
    original = sim_data.details(fiche_id)
    row = FicheCache.objects.get(fiche_id=fiche_id)

    payload = fiche_payload(row)
    expected = {k: v for k, v in original["fiche"].items() if k != "mail_devis"}
    assert json_round_trip(payload["fiche"]) == json_round_trip(expected)
    assert list(payload["fiche"]) == list(expected)  # same sections, same order
    assert (payload["success"], payload["message"], payload["cle"]) == (True, "OK", original["cle"])

    with_mail = fiche_payload(row, include_mail_devis=True)
    assert json_round_trip(with_mail["fiche"]) == json_round_trip(original["fiche"])
    assert list(with_mail["fiche"]) == list(original["fiche"])
    assert with_mail["fiche"]["mail_devis"] == original["fiche"]["mail_devis"]


def test_fiche_payload_of_a_sales_list_only_fiche(sim_data):
    target = sim_data.find(lambda s: s["recordings"])
    cache_fiche_sales_summaries([target], revalidated_at=T1)
    payload = fiche_payload(FicheCache.objects.get(fiche_id=target["fiche_id"]), include_mail_devis=True)
    assert payload["message"] == "Sales list only" and payload["cle"] == target["cle"]
    information = payload["fiche"]["information"]
    for key in ("fiche_id", "sales_date", "groupe", "crm_user_id", "agent_name", "statut", "produit"):
        assert information[key] == target[key]
    assert payload["fiche"]["prospect"] == target["prospect"]
    assert json_round_trip(payload["fiche"]["recordings"]) == target["recordings"]
    assert "mail_devis" not in payload["fiche"]


def test_fiche_payload_keeps_unknown_and_missing_sections(sim_data):
    """Any gateway honouring the contract: an unknown section comes back, an absent one stays absent."""
    envelope = copy.deepcopy(sim_data.details(sim_data.sales(FIRST_DAY)[0]["fiche_id"]))
    fiche = envelope["fiche"]
    del fiche["conjoint"], fiche["alertes"]
    fiche["nouvelle_section"] = {"cle": "valeur", "liste": [1, 2.5, None]}
    fiche_details_persist(envelope=envelope)
    payload = fiche_payload(FicheCache.objects.get(fiche_id=fiche["information"]["fiche_id"]), include_mail_devis=True)
    assert list(payload["fiche"]) == list(fiche)
    assert json_round_trip(payload["fiche"]) == json_round_trip(fiche)


def test_text_needing_escapes_survives_the_copy():
    weird = 'a\tb\\c\nd "q" \' é 🎉 \\N'
    cache_fiche_sales_summaries(
        [sale("9001", statut=weird, prospect={"nom": weird, "prenom": "\\"}, recordings=[rec("c\\1", note=weird)])],
        revalidated_at=T1,
    )
    row = FicheCache.objects.get(fiche_id="9001")
    assert (row.statut, row.prospect_nom, row.prospect_prenom) == (weird, weird, "\\")
    assert row.raw_data["statut"] == weird
    recording = Recording.objects.get()
    assert recording.call_id == "c\\1" and recording.raw_data == {"note": weird}
