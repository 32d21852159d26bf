"""The CRM client (fiches.clients.crm) against the simulator over real HTTP, and against a tiny
stub server for bodies that break the contract."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from fiches.clients import crm as client
from fiches.clients.crm import CrmNotFound, CrmPermanentError, CrmTransientError
from fiches.simulator import data
from tests.fiches.conftest import FIRST_DAY, crm_calls

SALE_FIELDS = {
    "fiche_id",
    "cle",
    "sales_date",
    "groupe",
    "crm_user_id",
    "agent_name",
    "statut",
    "produit",
    "montant_cotisation",
    "prospect",
}
PROSPECT_FIELDS = {"civilite", "nom", "prenom", "email", "telephone", "code_postal", "ville"}
RECORDING_FIELDS = {
    "call_id",
    "recording_url",
    "started_at",
    "duration_seconds",
    "direction",
    "from_number",
    "to_number",
}
INFORMATION_FIELDS = {
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
DETAIL_PROSPECT_FIELDS = PROSPECT_FIELDS | {"date_naissance", "adresse"}
FICHE_SECTIONS = {
    "information",
    "prospect",
    "etiquettes",
    "documents",
    "commentaires",
    "mails",
    "rendez_vous",
    "alertes",
    "enfants",
    "conjoint",
    "reclamations",
    "autres_contrats",
    "raw_sections",
    "elements_souscription",
    "tarification",
    "mail_devis",
    "recordings",
}
API_KEY = "sekret-key-123"
FIRST_FICHE = data.fiche_id_for(FIRST_DAY, 0)


# --- Contract fields ------------------------------------------------------------------------------


def test_sales_list_items_carry_every_contract_field(crm, sim_data):
    sales = client.fetch_sales_with_calls(FIRST_DAY, FIRST_DAY, include_recordings=True)

    expected = sim_data.sales(FIRST_DAY, include_recordings=True)
    assert sales == expected
    assert sales and any(sale["recordings"] for sale in sales)
    for sale in sales:
        assert SALE_FIELDS | {"recordings"} <= sale.keys()
        assert sale["prospect"].keys() >= PROSPECT_FIELDS
        for rec in sale["recordings"]:
            assert rec.keys() >= RECORDING_FIELDS
    [call] = crm_calls(crm)
    assert call["params"] == {"startDate": "2026-02-02", "endDate": "2026-02-02", "includeRecordings": "true"}


def test_sales_list_of_a_range_spans_every_date(crm, sim_data):
    end = date(2026, 2, 4)
    sales = client.fetch_sales_with_calls(FIRST_DAY, end, include_recordings=True)
    expected = [s for d in (FIRST_DAY, date(2026, 2, 3), end) for s in sim_data.sales(d)]
    assert sales == expected


def test_include_recordings_false_has_no_recordings_key(crm, sim_data):
    sales = client.fetch_sales_with_calls(FIRST_DAY, FIRST_DAY, include_recordings=False)

    assert sales == sim_data.sales(FIRST_DAY, include_recordings=False)
    assert sales and all("recordings" not in sale for sale in sales)
    assert crm_calls(crm)[0]["params"]["includeRecordings"] == "false"


def test_include_recordings_defaults_to_the_setting(crm, settings):
    settings.FICHE_SALES_INCLUDE_RECORDINGS = False
    sales = client.fetch_sales_with_calls(FIRST_DAY, FIRST_DAY)
    assert all("recordings" not in sale for sale in sales)
    settings.FICHE_SALES_INCLUDE_RECORDINGS = True
    sales = client.fetch_sales_with_calls(FIRST_DAY, FIRST_DAY)
    assert all("recordings" in sale for sale in sales)


def test_details_envelope_carries_every_contract_field(crm, sim_data):
    sale = sim_data.find(lambda s: len(s["recordings"]) >= 2)
    envelope = client.fetch_fiche_details(sale["fiche_id"])

    assert envelope == sim_data.details(sale["fiche_id"])
    assert envelope["success"] is True and envelope["message"] == "OK" and envelope["cle"] == sale["cle"]
    fiche = envelope["fiche"]
    assert set(fiche) == FICHE_SECTIONS
    assert fiche["information"].keys() >= INFORMATION_FIELDS
    assert fiche["prospect"].keys() >= DETAIL_PROSPECT_FIELDS
    assert {"sujet", "html"} <= fiche["mail_devis"].keys()
    assert fiche["recordings"] == sale["recordings"]
    for rec in fiche["recordings"]:
        assert rec.keys() >= RECORDING_FIELDS
    assert [c["path"] for c in crm_calls(crm)] == [f"/api/fiches/by-id/{sale['fiche_id']}"]


# --- Errors ---------------------------------------------------------------------------------------


def test_wrong_api_key_is_permanent_and_never_in_the_message(crm, settings):
    crm.config.api_key = "the-right-key"
    settings.CRM_API_KEY = API_KEY

    with pytest.raises(CrmPermanentError) as excinfo:
        client.fetch_sales_with_calls(FIRST_DAY, FIRST_DAY)
    exc = excinfo.value
    assert not isinstance(exc, CrmTransientError)
    assert exc.status == 401
    assert API_KEY not in str(exc) and API_KEY not in repr(exc)
    assert exc.__cause__ is None and exc.__context__ is None

    with pytest.raises(CrmPermanentError) as excinfo:
        client.fetch_fiche_details(FIRST_FICHE)
    assert excinfo.value.status == 401 and API_KEY not in str(excinfo.value)


def test_right_api_key_is_sent_as_bearer(crm, settings, sim_data):
    crm.config.api_key = API_KEY
    settings.CRM_API_KEY = API_KEY
    assert client.fetch_sales_with_calls(FIRST_DAY, FIRST_DAY) == sim_data.sales(FIRST_DAY)


def test_503_on_a_failing_date_is_transient(crm):
    crm.config.fail_dates = frozenset({FIRST_DAY})
    with pytest.raises(CrmTransientError) as excinfo:
        client.fetch_sales_with_calls(FIRST_DAY, FIRST_DAY)
    assert excinfo.value.status == 503
    with pytest.raises(CrmTransientError) as excinfo:
        client.fetch_fiche_details(FIRST_FICHE)
    assert excinfo.value.status == 503


def test_504_on_a_long_range_is_transient(crm):
    crm.config.max_range_days = 2
    with pytest.raises(CrmTransientError) as excinfo:
        client.fetch_sales_with_calls(FIRST_DAY, date(2026, 2, 6))
    assert excinfo.value.status == 504
    assert client.fetch_sales_with_calls(FIRST_DAY, date(2026, 2, 3)) is not None  # within the limit


def test_read_timeout_is_transient(crm, settings):
    crm.config.latency_ms = 1500
    settings.CRM_TIMEOUT_SECONDS = 0.3
    started = time.monotonic()
    with pytest.raises(CrmTransientError) as excinfo:
        client.fetch_sales_with_calls(FIRST_DAY, FIRST_DAY)
    assert time.monotonic() - started < 1.4
    assert excinfo.value.status is None
    assert "timeout" in str(excinfo.value).lower()
    # Let the simulator finish the abandoned request, so that it does not land in the next test's log.
    deadline = time.monotonic() + 5
    while not crm.requests() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_connection_refused_is_transient(dead_crm):
    with pytest.raises(CrmTransientError) as excinfo:
        client.fetch_sales_with_calls(FIRST_DAY, FIRST_DAY)
    assert excinfo.value.status is None
    with pytest.raises(CrmTransientError):
        client.fetch_fiche_details("2225000")


def test_unknown_fiche_is_not_found(crm, sim_data):
    with pytest.raises(CrmNotFound) as excinfo:
        client.fetch_fiche_details(sim_data.unknown_fiche_id())
    assert isinstance(excinfo.value, CrmPermanentError)
    assert excinfo.value.status == 404
    with pytest.raises(CrmNotFound):
        client.fetch_fiche_details("999999999")


def test_invalid_fiche_id_is_rejected_without_a_call(crm):
    for bad in ("", "  ", "12/34"):
        with pytest.raises(CrmPermanentError):
            client.fetch_fiche_details(bad)
    assert crm_calls(crm) == []


# --- Session --------------------------------------------------------------------------------------


def test_one_session_is_reused_across_calls(crm):
    session = client._session()
    client.fetch_sales_with_calls(FIRST_DAY, FIRST_DAY)
    client.fetch_fiche_details(FIRST_FICHE)
    assert client._session() is session
    assert client._session() is client._session()


# --- Bodies that break the contract (a stub gateway) -------------------------------------------------


class StubGateway:
    """A minimal HTTP server answering configured (status, body) per path; records request headers."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, bytes, str]] = {}
        self.headers: list[dict[str, str]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub.headers.append(dict(self.headers))
                status, body, content_type = stub.routes.get(
                    urlsplit(self.path).path, (404, b'{"success": false, "message": "Not found"}', "application/json")
                )
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def json(self, path: str, payload, status: int = 200) -> None:
        self.routes[path] = (status, json.dumps(payload).encode(), "application/json")

    def raw(self, path: str, body: bytes, status: int = 200, content_type: str = "text/html") -> None:
        self.routes[path] = (status, body, content_type)


SALES_PATH = "/api/fiches/sales-with-calls"


@pytest.fixture
def stub(settings) -> Iterator[StubGateway]:
    gateway = StubGateway()
    gateway.thread.start()
    settings.CRM_BASE_URL = gateway.url
    settings.CRM_API_KEY = ""
    settings.CRM_TIMEOUT_SECONDS = 5.0
    try:
        yield gateway
    finally:
        gateway.server.shutdown()
        gateway.server.server_close()
        gateway.thread.join(timeout=5)


def test_sale_without_fiche_id_is_permanent_and_named(stub):
    stub.json(SALES_PATH, {"success": True, "fiches": [{"sales_date": "2026-02-01"}]})
    with pytest.raises(CrmPermanentError) as excinfo:
        client.fetch_sales_with_calls(date(2026, 2, 1), date(2026, 2, 1))
    assert "fiche_id" in str(excinfo.value)
    assert "fiches[0]" in str(excinfo.value)


def test_sale_with_an_impossible_date_is_permanent_and_named(stub):
    stub.json(SALES_PATH, {"fiches": [{"fiche_id": "1", "sales_date": "2026-13-45"}]})
    with pytest.raises(CrmPermanentError) as excinfo:
        client.fetch_sales_with_calls(date(2026, 2, 1), date(2026, 2, 1))
    assert "sales_date" in str(excinfo.value)
    assert "2026-13-45" in str(excinfo.value)


@pytest.mark.parametrize("bad_date", ["20260201", "2026-2-1", "", None, 20260201])
def test_sale_with_a_non_iso_date_is_permanent(stub, bad_date):
    stub.json(SALES_PATH, {"success": True, "fiches": [{"fiche_id": "1", "sales_date": bad_date}]})
    with pytest.raises(CrmPermanentError) as excinfo:
        client.fetch_sales_with_calls(date(2026, 2, 1), date(2026, 2, 1))
    assert "sales_date" in str(excinfo.value)


def test_non_json_body_is_permanent(stub):
    stub.raw(SALES_PATH, b"<html><body>Gateway says hi</body></html>")
    with pytest.raises(CrmPermanentError) as excinfo:
        client.fetch_sales_with_calls(date(2026, 2, 1), date(2026, 2, 1))
    assert not isinstance(excinfo.value, CrmTransientError)
    assert "JSON" in str(excinfo.value)


@pytest.mark.parametrize(
    "payload, named",
    [
        ({"success": True}, "fiches"),
        ({"success": True, "fiches": {"fiche_id": "1"}}, "fiches"),
        ({"success": False, "message": "nope"}, "success"),
        ([1, 2, 3], "success"),
        ({"success": True, "fiches": ["not-an-object"]}, "fiches[0]"),
        ({"success": True, "fiches": [{"fiche_id": "1", "sales_date": "2026-02-01", "prospect": "x"}]}, "prospect"),
        ({"success": True, "fiches": [{"fiche_id": "1", "sales_date": "2026-02-01", "recordings": {}}]}, "recordings"),
        ({"success": True, "fiches": [{"fiche_id": "1", "sales_date": "2026-02-01", "recordings": [{}]}]}, "call_id"),
        (
            {
                "success": True,
                "fiches": [
                    {
                        "fiche_id": "1",
                        "sales_date": "2026-02-01",
                        "recordings": [{"call_id": "c", "started_at": "yesterday"}],
                    }
                ],
            },
            "started_at",
        ),
        (
            {
                "success": True,
                "fiches": [
                    {
                        "fiche_id": "1",
                        "sales_date": "2026-02-01",
                        "recordings": [{"call_id": "c", "duration_seconds": "12"}],
                    }
                ],
            },
            "duration_seconds",
        ),
    ],
)
def test_sales_list_breaking_the_contract_is_permanent(stub, payload, named):
    stub.json(SALES_PATH, payload)
    with pytest.raises(CrmPermanentError) as excinfo:
        client.fetch_sales_with_calls(date(2026, 2, 1), date(2026, 2, 1))
    assert named in str(excinfo.value)


def test_sales_list_normalizes_ids_and_keeps_unknown_fields(stub):
    stub.json(
        SALES_PATH,
        {
            "success": True,
            "fiches": [
                {
                    "fiche_id": 1048213,
                    "sales_date": "2026-02-01",
                    "groupe": "Lyon-2",
                    "extra": {"a": 1},
                    "recordings": [{"call_id": 42, "started_at": "2026-02-01T09:14:03Z", "duration_seconds": 12.5}],
                },
            ],
        },
    )
    [sale] = client.fetch_sales_with_calls(date(2026, 2, 1), date(2026, 2, 1))
    assert sale["fiche_id"] == "1048213"
    assert sale["extra"] == {"a": 1}
    assert sale["prospect"] == {}
    assert sale["recordings"][0]["call_id"] == "42"


@pytest.mark.parametrize(
    "payload, named",
    [
        ({"success": True, "fiche": {"information": {"sales_date": "2026-02-01"}}}, "fiche_id"),
        ({"success": True, "fiche": {"information": {"fiche_id": "77", "sales_date": "2026-02-30"}}}, "sales_date"),
        ({"success": True, "fiche": {"information": {"fiche_id": "78", "sales_date": "2026-02-01"}}}, "78"),
        ({"success": True, "fiche": {}}, "information"),
        ({"success": True}, "fiche"),
        ({"success": False, "message": "cle expired"}, "cle expired"),
    ],
)
def test_details_breaking_the_contract_are_permanent(stub, payload, named):
    stub.json("/api/fiches/by-id/77", payload)
    with pytest.raises(CrmPermanentError) as excinfo:
        client.fetch_fiche_details("77")
    assert not isinstance(excinfo.value, CrmNotFound)
    assert named in str(excinfo.value)


def test_an_echoed_api_key_is_scrubbed_from_error_messages(stub, settings):
    """A gateway echoing the token in its error body must not leak it into our messages (or logs)."""
    settings.CRM_API_KEY = API_KEY
    stub.json(SALES_PATH, {"success": False, "message": f"bad token Bearer {API_KEY}"}, status=401)
    stub.json("/api/fiches/by-id/5", {"success": False, "message": f"upstream failed for {API_KEY}"}, status=502)
    with pytest.raises(CrmPermanentError) as excinfo:
        client.fetch_sales_with_calls(date(2026, 2, 1), date(2026, 2, 1))
    assert API_KEY not in str(excinfo.value) and "bad token" in str(excinfo.value)
    with pytest.raises(CrmTransientError) as excinfo:
        client.fetch_fiche_details("5")
    assert API_KEY not in str(excinfo.value) and excinfo.value.status == 502
    assert stub.headers[0]["Authorization"] == f"Bearer {API_KEY}"


def test_other_4xx_and_redirects_are_permanent(stub):
    stub.json(SALES_PATH, {"success": False, "message": "bad params"}, status=400)
    stub.routes["/api/fiches/by-id/9"] = (302, b"", "text/plain")
    with pytest.raises(CrmPermanentError) as excinfo:
        client.fetch_sales_with_calls(date(2026, 2, 1), date(2026, 2, 1))
    assert excinfo.value.status == 400 and "bad params" in str(excinfo.value)
    with pytest.raises(CrmPermanentError) as excinfo:
        client.fetch_fiche_details("9")
    assert excinfo.value.status == 302
