"""The CRM gateway simulator: deterministic data (fiches.simulator.data) and its HTTP server."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from fiches.simulator import data
from fiches.simulator.roster import AGENTS_BY_ID
from fiches.simulator.server import CrmSimulator, SimulatorConfig

MONDAY = date(2026, 2, 2)
SUNDAY = date(2026, 2, 1)
SALES = "/api/fiches/sales-with-calls"
BY_ID = "/api/fiches/by-id/"

PROSPECT_FIELDS = {
    "civilite": str,
    "nom": str,
    "prenom": str,
    "email": str,
    "telephone": str,
    "code_postal": str,
    "ville": str,
}
RECORDING_FIELDS = {
    "call_id": str,
    "recording_url": str,
    "started_at": str,
    "duration_seconds": int,
    "direction": str,
    "from_number": str,
    "to_number": str,
}
SALE_FIELDS = {
    "fiche_id": str,
    "cle": str,
    "sales_date": str,
    "groupe": str,
    "crm_user_id": str,
    "agent_name": str,
    "statut": str,
    "produit": str,
    "montant_cotisation": float,
    "prospect": dict,
}
DETAIL_SECTIONS = {
    "information": dict,
    "prospect": dict,
    "etiquettes": list,
    "documents": list,
    "commentaires": list,
    "mails": list,
    "rendez_vous": list,
    "alertes": list,
    "enfants": list,
    "reclamations": list,
    "autres_contrats": list,
    "raw_sections": dict,
    "elements_souscription": dict,
    "tarification": list,
    "mail_devis": dict,
    "recordings": list,
}


def day_sales(day: date = MONDAY, **overrides: Any) -> list[dict[str, Any]]:
    params = {"seed": 42, "fiches_per_day": 20, "revision": 0, "include_recordings": True} | overrides
    return data.sales_for_date(day, **params)


def details(fiche_id: str, **overrides: Any) -> dict[str, Any] | None:
    return data.fiche_details(fiche_id, **{"seed": 42, "fiches_per_day": 20, "revision": 0} | overrides)


@pytest.fixture
def sim() -> Iterator[CrmSimulator]:
    with CrmSimulator(SimulatorConfig()) as simulator:
        yield simulator


def get_sales(sim: CrmSimulator, start: str, end: str, **params: str) -> requests.Response:
    return requests.get(f"{sim.url}{SALES}", params={"startDate": start, "endDate": end, **params}, timeout=10)


def assert_error(response: requests.Response, status: int, message: str | None = None) -> None:
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["success"] is False and isinstance(body["message"], str) and body["message"]
    if message is not None:
        assert body["message"] == message


# --- data ---------------------------------------------------------------------------------------


def test_same_seed_gives_same_data_and_another_seed_different_data():
    assert day_sales() == day_sales()
    fiche_id = day_sales()[0]["fiche_id"]
    assert details(fiche_id) == details(fiche_id)
    assert day_sales(seed=7) != day_sales()
    assert details(fiche_id, seed=7) != details(fiche_id)


def test_data_does_not_depend_on_the_process_hash_seed():
    script = (
        "import hashlib, json; from datetime import date; from fiches.simulator import data; "
        "sales = data.sales_for_date(date(2026, 2, 2), seed=42, fiches_per_day=20, revision=1, "
        "include_recordings=True); print(hashlib.sha256(json.dumps(sales).encode()).hexdigest())"
    )
    root = Path(__file__).resolve().parents[2]
    digests = {
        subprocess.run(
            [sys.executable, "-c", script],
            cwd=root,
            env={"PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for hash_seed in ("1", "2")
    }
    assert len(digests) == 1


def test_sales_count_follows_the_week():
    days = [MONDAY + timedelta(days=n) for n in range(7 * 26)]
    counts = {day: data.sales_count(day, seed=42, fiches_per_day=20) for day in days}
    weekdays = [counts[d] for d in days if d.weekday() < 5]
    saturdays = [counts[d] for d in days if d.weekday() == 5]
    sundays = [counts[d] for d in days if d.weekday() == 6]
    assert all(14 <= n <= 26 for n in weekdays)
    assert all(7 <= n <= 13 for n in saturdays)
    assert all(n <= 2 for n in sundays) and sundays.count(0) > len(sundays) / 3
    assert data.sales_count(MONDAY, seed=42, fiches_per_day=5000) == data.MAX_SALES_PER_DAY
    assert data.sales_count(MONDAY, seed=42, fiches_per_day=0) == 0


def test_fiche_id_round_trip_and_invalid_ids():
    for day in (date(2020, 1, 1), MONDAY, date(2099, 12, 31)):
        for index in (0, 7, 998):
            fiche_id = data.fiche_id_for(day, index)
            assert fiche_id.isdigit()
            assert data.parse_fiche_id(fiche_id) == (day, index)
    assert data.fiche_id_for(MONDAY, 7) == "2225007"
    for invalid in ("", "abc", "12a", "0225007", "999", "2225999", "-2225007", "١٢٣٤", "9" * 30):
        assert data.parse_fiche_id(invalid) is None
    with pytest.raises(ValueError):
        data.fiche_id_for(MONDAY, 999)


def test_sales_have_realistic_consistent_values():
    sales = [sale for n in range(5) for sale in day_sales(MONDAY + timedelta(days=n))]
    assert len({sale["fiche_id"] for sale in sales}) == len(sales)
    call_ids = [rec["call_id"] for sale in sales for rec in sale["recordings"]]
    assert len(set(call_ids)) == len(call_ids)
    assert {len(sale["recordings"]) for sale in sales} <= set(range(5))
    for sale in sales:
        agent = AGENTS_BY_ID[sale["crm_user_id"]]
        assert (sale["groupe"], sale["agent_name"]) == (agent.groupe, agent.name)
        assert len(sale["cle"]) == 6 and int(sale["cle"], 16) >= 0
        assert sale["montant_cotisation"] > 0
        for rec in sale["recordings"]:
            assert rec["started_at"].startswith(sale["sales_date"] + "T") and rec["started_at"].endswith("Z")
            assert rec["recording_url"] == f"https://recordings.example/{rec['call_id']}.mp3"
            assert rec["direction"] in ("inbound", "outbound")
            assert sale["prospect"]["telephone"] in (rec["from_number"], rec["to_number"])
        prospect = sale["prospect"]
        expected_prefix = {"Lyon": "6900", "Paris": "750", "Marseille": "130", "Lille": "59"}.get(prospect["ville"])
        if expected_prefix:
            assert prospect["code_postal"].startswith(expected_prefix)


def test_details_are_consistent_with_the_sales_list():
    for sale in day_sales():
        body = details(sale["fiche_id"])
        assert body is not None and body["success"] is True and body["message"] == "OK"
        fiche = body["fiche"]
        assert body["cle"] == sale["cle"]
        information = fiche["information"]
        for key in ("fiche_id", "sales_date", "groupe", "crm_user_id", "agent_name", "statut", "produit"):
            assert information[key] == sale[key]
        assert information["date_creation"] <= information["date_modification"]
        for key, value in sale["prospect"].items():
            assert fiche["prospect"][key] == value
        assert fiche["recordings"] == sale["recordings"]
        chosen = [row for row in fiche["tarification"] if row["retenue"]]
        assert [row["cotisation_mensuelle"] for row in chosen] == [sale["montant_cotisation"]]
        assert 5_000 <= len(fiche["mail_devis"]["html"].encode()) <= 40_000


def test_details_of_unknown_ids_are_none():
    count = data.sales_count(MONDAY, seed=42, fiches_per_day=20)
    assert details(data.fiche_id_for(MONDAY, count)) is None
    assert details(data.fiche_id_for(MONDAY, count - 1)) is not None
    assert details("not-an-id") is None


def test_a_revision_changes_some_sales_but_not_all():
    days = [MONDAY + timedelta(days=n) for n in range(5)]
    base = [sale for day in days for sale in day_sales(day)]
    revised = [sale for day in days for sale in day_sales(day, revision=1)]
    assert [s["fiche_id"] for s in base] == [s["fiche_id"] for s in revised]
    changed = [(old, new) for old, new in zip(base, revised, strict=True) if old != new]
    assert 0.05 * len(base) < len(changed) < 0.5 * len(base)
    for old, new in changed:
        assert old["statut"] != new["statut"] or len(new["recordings"]) == len(old["recordings"]) + 1
        assert new["recordings"][: len(old["recordings"])] == old["recordings"]
    assert [s for day in days for s in day_sales(day, revision=2)] != revised
    for old, new in changed[:10]:
        before, after = details(old["fiche_id"])["fiche"], details(new["fiche_id"], revision=1)["fiche"]
        assert after["information"]["statut"] == new["statut"] and after["recordings"] == new["recordings"]
        assert after["information"]["date_modification"] > before["information"]["date_modification"]
        for stable in ("prospect", "enfants", "conjoint", "tarification", "mail_devis"):
            assert after[stable] == before[stable]


# --- HTTP server --------------------------------------------------------------------------------


def test_sales_list_has_every_contract_field(sim):
    response = get_sales(sim, "2026-02-01", "2026-02-03", includeRecordings="true")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert (body["success"], body["startDate"], body["endDate"]) == (True, "2026-02-01", "2026-02-03")
    fiches = body["fiches"]
    assert body["total"] == len(fiches) > 0
    assert [f["sales_date"] for f in fiches] == sorted(f["sales_date"] for f in fiches)
    assert fiches == [s for n in range(3) for s in day_sales(SUNDAY + timedelta(days=n))]
    assert any(f["recordings"] for f in fiches)
    for fiche in fiches:
        assert set(fiche) == set(SALE_FIELDS) | {"recordings"}
        for key, kind in SALE_FIELDS.items():
            assert isinstance(fiche[key], kind), key
        assert set(fiche["prospect"]) == set(PROSPECT_FIELDS)
        for key, kind in PROSPECT_FIELDS.items():
            assert isinstance(fiche["prospect"][key], kind), key
        for rec in fiche["recordings"]:
            assert set(rec) == set(RECORDING_FIELDS)
            for key, kind in RECORDING_FIELDS.items():
                assert isinstance(rec[key], kind), key

    without = get_sales(sim, "2026-02-01", "2026-02-03", includeRecordings="false").json()
    assert without["total"] == body["total"]
    assert all("recordings" not in fiche for fiche in without["fiches"])
    assert get_sales(sim, "2026-02-01", "2026-02-03").json() == without


def test_a_date_without_sales_returns_an_empty_list(sim):
    sim.config.fiches_per_day = 0
    body = get_sales(sim, "2026-02-02", "2026-02-02").json()
    assert (body["success"], body["total"], body["fiches"]) == (True, 0, [])


def test_details_over_http_have_every_section(sim):
    sale = day_sales()[3]
    response = requests.get(f"{sim.url}{BY_ID}{sale['fiche_id']}", timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert body == details(sale["fiche_id"])
    fiche = body["fiche"]
    assert set(fiche) == set(DETAIL_SECTIONS) | {"conjoint"}
    for key, kind in DETAIL_SECTIONS.items():
        assert isinstance(fiche[key], kind), key
    assert fiche["conjoint"] is None or isinstance(fiche["conjoint"], dict)
    assert set(fiche["information"]) == {
        "fiche_id",
        "sales_date",
        "groupe",
        "crm_user_id",
        "agent_name",
        "statut",
        "produit",
        "date_creation",
        "date_modification",
    }
    assert set(fiche["prospect"]) == set(PROSPECT_FIELDS) | {"date_naissance", "adresse"}
    assert set(fiche["mail_devis"]) == {"sujet", "html"}


@pytest.mark.parametrize("fiche_id", ["2225999", "2225900", "abc", "0", "99999999999999999999"])
def test_unknown_fiche_is_404(sim, fiche_id):
    assert_error(requests.get(f"{sim.url}{BY_ID}{fiche_id}", timeout=10), 404, "Fiche not found")


def test_unknown_path_is_404_json(sim):
    assert_error(requests.get(f"{sim.url}/api/nothing", timeout=10), 404)
    assert_error(requests.post(f"{sim.url}{SALES}", timeout=10), 405)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"startDate": "2026-02-01"},
        {"startDate": "2026-02-01", "endDate": "2026-2-3"},
        {"startDate": "20260201", "endDate": "20260203"},
        {"startDate": "2026-02-30", "endDate": "2026-03-01"},
        {"startDate": "2026-02-03", "endDate": "2026-02-01"},
        {"startDate": "2026-02-01", "endDate": "2026-02-01", "includeRecordings": "maybe"},
    ],
)
def test_bad_dates_are_400(sim, params):
    assert_error(requests.get(f"{sim.url}{SALES}", params=params, timeout=10), 400)


def test_wrong_or_missing_api_key_is_401(sim):
    sim.config.api_key = "s3cret"
    url = f"{sim.url}{BY_ID}{day_sales()[0]['fiche_id']}"
    assert_error(requests.get(url, timeout=10), 401)
    assert_error(requests.get(url, headers={"Authorization": "Bearer wrong"}, timeout=10), 401)
    assert_error(requests.get(url, headers={"Authorization": "s3cret"}, timeout=10), 401)
    assert requests.get(url, headers={"Authorization": "Bearer s3cret"}, timeout=10).status_code == 200
    assert "s3cret" not in requests.get(url, timeout=10).text
    assert requests.get(f"{sim.url}/__sim__/requests", timeout=10).status_code == 200


def test_fail_dates_answer_503(sim):
    sim.config.fail_dates = frozenset({date(2026, 2, 3)})
    assert_error(get_sales(sim, "2026-02-01", "2026-02-05"), 503)
    assert_error(get_sales(sim, "2026-02-03", "2026-02-03"), 503)
    assert get_sales(sim, "2026-02-04", "2026-02-05").status_code == 200
    failing_fiche = day_sales(date(2026, 2, 3))[0]["fiche_id"]
    assert_error(requests.get(f"{sim.url}{BY_ID}{failing_fiche}", timeout=10), 503)
    assert requests.get(f"{sim.url}{BY_ID}{day_sales()[0]['fiche_id']}", timeout=10).status_code == 200


def test_fail_rate_answers_503(sim):
    sim.config.fail_rate = 1.0
    assert_error(get_sales(sim, "2026-02-02", "2026-02-02"), 503)
    sim.config.fail_rate = 0.5
    statuses = {get_sales(sim, "2026-02-02", "2026-02-02").status_code for _ in range(30)}
    assert statuses == {200, 503}


def test_range_over_max_days_is_504(sim):
    sim.config.max_range_days = 5
    assert_error(get_sales(sim, "2026-02-01", "2026-02-06"), 504)
    assert get_sales(sim, "2026-02-01", "2026-02-05").status_code == 200


def test_request_log_records_overlapping_concurrent_requests(sim):
    sim.config.latency_ms = 200
    responses: list[int] = []
    threads = [
        threading.Thread(target=lambda: responses.append(get_sales(sim, "2026-02-02", "2026-02-02").status_code))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert responses == [200, 200]
    log = requests.get(f"{sim.url}/__sim__/requests", timeout=10).json()["requests"]
    assert log == sim.requests()
    assert len(log) == 2
    first, second = log
    for entry in log:
        assert (entry["method"], entry["path"], entry["status"]) == ("GET", SALES, 200)
        assert entry["params"] == {"startDate": "2026-02-02", "endDate": "2026-02-02"}
        assert entry["end"] - entry["start"] >= 0.2
    assert first["start"] < second["end"] and second["start"] < first["end"]

    assert requests.delete(f"{sim.url}/__sim__/requests", timeout=10).status_code == 200
    assert sim.requests() == []
    requests.get(f"{sim.url}{BY_ID}abc", timeout=10)
    assert [(e["path"], e["status"]) for e in sim.requests()] == [(f"{BY_ID}abc", 404)]
    sim.clear_requests()
    assert sim.requests() == []


def test_post_config_changes_a_running_simulator(sim):
    config_url = f"{sim.url}/__sim__/config"
    assert requests.get(config_url, timeout=10).json() == SimulatorConfig().to_dict()

    response = requests.post(config_url, json={"fail_dates": ["2026-02-02"], "revision": 1}, timeout=10)
    assert response.status_code == 200
    assert response.json()["fail_dates"] == ["2026-02-02"] and response.json()["revision"] == 1
    assert sim.config.fail_dates == {MONDAY}
    assert_error(get_sales(sim, "2026-02-02", "2026-02-02"), 503)
    assert get_sales(sim, "2026-02-03", "2026-02-03").json()["fiches"] == day_sales(
        date(2026, 2, 3), revision=1, include_recordings=False
    )

    requests.post(config_url, json={"fail_dates": [], "max_range_days": 2, "api_key": "k"}, timeout=10)
    assert_error(get_sales(sim, "2026-02-02", "2026-02-02"), 401)
    ok = requests.get(
        f"{sim.url}{SALES}",
        params={"startDate": "2026-02-02", "endDate": "2026-02-03"},
        headers={"Authorization": "Bearer k"},
        timeout=10,
    )
    assert ok.status_code == 200

    for invalid in ({"fail_dates": ["02/02/2026"]}, {"fail_rate": 2}, {"latency_ms": "fast"}, {"nope": 1}, [1]):
        assert_error(requests.post(config_url, json=invalid, timeout=10), 400)
    assert sim.config.max_range_days == 2  # invalid updates change nothing


def test_config_from_env():
    config = SimulatorConfig.from_env(
        {
            "CRM_SIM_SEED": "7",
            "CRM_SIM_FICHES_PER_DAY": "50",
            "CRM_SIM_LATENCY_MS": "25",
            "CRM_SIM_FAIL_DATES": "2026-02-01, 2026-02-03",
            "CRM_SIM_FAIL_RATE": "0.1",
            "CRM_SIM_MAX_RANGE_DAYS": "10",
            "CRM_SIM_REVISION": "2",
            "CRM_SIM_API_KEY": "key",
        }
    )
    assert config == SimulatorConfig(
        seed=7,
        fiches_per_day=50,
        latency_ms=25,
        fail_dates=frozenset({SUNDAY, date(2026, 2, 3)}),
        fail_rate=0.1,
        max_range_days=10,
        revision=2,
        api_key="key",
    )
    assert SimulatorConfig.from_env({"CRM_SIM_API_KEY": ""}) == SimulatorConfig()
    with pytest.raises(ValueError, match="CRM_SIM_FAIL_RATE"):
        SimulatorConfig.from_env({"CRM_SIM_FAIL_RATE": "often"})
