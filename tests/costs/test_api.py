"""The costs and budgets API: the figures (grouped, totals, cost per audited minute of call), parameter
validation, and no side door: a GROUP user sees only their groups' fiches' costs, a SELF user only their own
fiches', no audits grant is a 403; the global budget's figures only for an ALL-scope reader."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from fiches.models import Recording
from tests.costs.conftest import usage

pytestmark = pytest.mark.django_db

COSTS, BUDGETS = "/api/analytics/costs", "/api/analytics/budgets"


@pytest.fixture
def spend(fiches, make_user):
    """Today and yesterday's usage on three fiches, some unattributed (no user) and one with no fiche."""
    today = timezone.localdate()
    asker = make_user(email="asker@example.com")
    rows = {
        # 1,000,000 prompt tokens at 0.15 + 100,000 completion at 0.60 = 0.21
        "lyon_step": usage(fiche=fiches["F-LYON"], user=asker, prompt_tokens=1_000_000, completion_tokens=100_000),
        # 400,000 x 0.15 + 600,000 cached x 0.075 = 0.105
        "lyon_rerun": usage(
            fiche=fiches["F-LYON"], purpose="rerun", prompt_tokens=1_000_000, cached_tokens=600_000, day=today
        ),
        # 1 hour of audio at 0.40
        "lyon2_stt": usage(fiche=fiches["F-LYON-2"], kind="stt", model="scribe_v2", audio_seconds=3600),
        # a model not in LLM_PRICES: 100,000 x 2.50 = 0.25, yesterday
        "mrs_chat": usage(
            fiche=fiches["F-MRS"],
            purpose="chat",
            model="mystery-9",
            prompt_tokens=100_000,
            day=today - timedelta(days=1),
        ),
        "nowhere": usage(purpose="chat", prompt_tokens=1_000_000),  # 0.15, no fiche (ALL readers only)
    }
    Recording.objects.create(call_id="c-lyon-1", fiche=fiches["F-LYON"], duration_seconds=600)
    Recording.objects.create(call_id="c-lyon-2", fiche=fiches["F-LYON"], duration_seconds=300)
    Recording.objects.create(call_id="c-mrs-1", fiche=fiches["F-MRS"], duration_seconds=6000)  # not audited
    return rows


@pytest.fixture
def readers(make_role, make_user):
    return {
        "all": make_user(make_role("all", audits=("r", "ALL"), users=("r", "ALL")), email="all@example.com"),
        "lyon": make_user(make_role("lyon", audits=("r", "GROUP")), email="lyon@example.com", groupes=["Lyon-2"]),
        "self": make_user(make_role("self", audits=("r", "SELF")), email="self@example.com", crm_user_id="u-1"),
        "none": make_user(make_role("none", fiches=("r", "ALL")), email="none@example.com"),
    }


def get(auth_client, user, url, **params):
    return auth_client(user).get(url, params)


def test_costs_by_purpose_with_totals_and_the_cost_per_audited_minute(spend, readers, auth_client):
    today = timezone.localdate()
    response = get(auth_client, readers["all"], COSTS, group_by="purpose", to=today.isoformat())
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["currency"], body["group_by"], body["to"]) == ("USD", "purpose", today.isoformat())
    assert body["from"] == (today - timedelta(days=29)).isoformat()
    rows = {row["key"]: row for row in body["rows"]}
    assert rows["chat"]["llm_cost"] == "0.400000" and rows["chat"]["calls"] == 2  # 0.25 + 0.15
    assert rows["chat"]["priced_by_default"] is True and rows["chat"]["priced_by_default_models"] == ["mystery-9"]
    assert rows["audit_step"]["cost"] == "0.210000" and rows["audit_step"]["priced_by_default"] is False
    assert rows["rerun"]["llm_cost"] == "0.105000" and rows["rerun"]["cached_tokens"] == 600_000
    assert rows["transcription"] == {
        "key": "transcription",
        "label": "transcription",
        "llm_cost": "0.000000",
        "stt_cost": "0.400000",
        "cost": "0.400000",
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cached_tokens": 0,
        "audio_seconds": 3600.0,
        "calls": 1,
        "priced_by_default": False,
        "priced_by_default_models": [],
    }
    assert [row["key"] for row in body["rows"]] == ["chat", "transcription", "audit_step", "rerun"]  # costliest first
    totals = body["totals"]
    assert (totals["llm_cost"], totals["stt_cost"], totals["cost"]) == ("0.715000", "0.400000", "1.115000")
    assert totals["calls"] == 5 and body["truncated"] is False
    # The audited fiche (F-LYON) has 15 minutes of calls: 1.115 / 15.
    assert totals["audited_call_minutes"] == 15.0 and totals["cost_per_audited_minute"] == "0.074333"


def test_costs_by_day_user_and_model(spend, readers, auth_client):
    today, yesterday = timezone.localdate(), timezone.localdate() - timedelta(days=1)
    by_day = get(auth_client, readers["all"], COSTS, group_by="day").json()["rows"]
    expected = [(yesterday.isoformat(), "0.250000"), (today.isoformat(), "0.865000")]
    assert [(r["key"], r["cost"]) for r in by_day] == expected
    by_user = {r["key"]: r for r in get(auth_client, readers["all"], COSTS, group_by="user").json()["rows"]}
    asker = spend["lyon_step"].user
    assert by_user[asker.pk]["label"] == "asker@example.com" and by_user[asker.pk]["cost"] == "0.210000"
    assert by_user[None]["label"] == "unattributed (automation)" and by_user[None]["cost"] == "0.905000"
    by_model = {r["key"]: r["cost"] for r in get(auth_client, readers["all"], COSTS, group_by="model").json()["rows"]}
    assert by_model == {"sim-judge-1": "0.465000", "mystery-9": "0.250000", "scribe_v2": "0.400000"}
    only_today = get(auth_client, readers["all"], COSTS, **{"from": today.isoformat(), "to": today.isoformat()})
    assert only_today.json()["totals"]["cost"] == "0.865000"


def test_a_user_sees_only_the_costs_of_work_on_fiches_in_their_audits_scope(spend, readers, auth_client):
    lyon = get(auth_client, readers["lyon"], COSTS, group_by="purpose").json()
    assert {r["key"] for r in lyon["rows"]} == {"audit_step", "rerun", "transcription"}  # not Marseille's chat
    assert lyon["totals"]["cost"] == "0.715000"  # 0.21 + 0.105 + 0.40; nothing without a fiche
    own = get(auth_client, readers["self"], COSTS, group_by="purpose").json()
    assert own["totals"]["cost"] == "0.315000"  # F-LYON only (sold by u-1): not F-LYON-2's transcription
    by_user = get(auth_client, readers["lyon"], COSTS, group_by="user").json()["rows"]
    asker = spend["lyon_step"].user
    assert {r["key"]: r["label"] for r in by_user}[asker.pk] == f"user #{asker.pk}"  # no users grant: no e-mail
    denied = get(auth_client, readers["none"], COSTS)
    assert denied.status_code == 403 and denied.json()["error"]["details"] == {"required": "audits.read"}
    assert get(auth_client, readers["none"], BUDGETS).status_code == 403


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"from": "2026-03-02", "to": "2026-03-01"}, "invalid_date_range"),
        ({"from": "2025-01-01", "to": "2026-01-02"}, "date_range_too_long"),
        ({"from": "yesterday"}, "validation_error"),
        ({"group_by": "fiche"}, "validation_error"),
    ],
)
def test_bad_costs_parameters_are_400(params, code, readers, auth_client):
    response = get(auth_client, readers["all"], COSTS, **params)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == code


def test_a_range_of_exactly_366_days_is_allowed(readers, auth_client):
    response = get(auth_client, readers["all"], COSTS, **{"from": "2025-01-01", "to": "2026-01-01"})
    assert response.status_code == 200 and response.json()["totals"]["cost"] == "0.000000"
    early = get(auth_client, readers["all"], COSTS, to="0001-01-05", group_by="week")  # no 30 days before it
    assert early.status_code == 200 and early.json()["from"] == "0001-01-01"


def test_budgets_show_your_own_and_the_global_one_only_to_all_scope_readers(spend, readers, auth_client, settings):
    settings.BUDGET_LLM_DAILY, settings.BUDGET_LLM_USER_DAILY = Decimal("0.50"), Decimal("0.20")
    lyon = get(auth_client, readers["lyon"], BUDGETS).json()
    assert lyon["mode"] == "wait" and lyon["currency"] == "USD"
    llm, stt = lyon["budgets"]
    assert (llm["kind"], stt["kind"]) == ("llm", "stt")
    assert llm["global"] is None and stt["global"] is None  # the global spend is everyone's work
    assert llm["user"]["limit"] == "0.20" and llm["user"]["spent"] == "0.000000"
    assert llm["user"]["exhausted"] is False and llm["user"]["scope"] == "user"
    everyone = get(auth_client, readers["all"], BUDGETS).json()["budgets"][0]["global"]
    # Today's LLM spend, everyone's: 0.21 + 0.105 + 0.15 (yesterday's chat is not today's).
    assert everyone["spent"] == "0.465000" and everyone["remaining"] == "0.035000" and everyone["exhausted"] is False
    assert everyone["resets_at"].startswith((timezone.localdate() + timedelta(days=1)).isoformat())
    asker = spend["lyon_step"].user
    mine = get(auth_client, asker, BUDGETS)
    assert mine.status_code == 403  # no audits grant: no budgets either


def test_the_cost_blocks_other_apps_show_and_read(spend, fiches, audit, auth_client, make_role, make_user, settings):
    from costs.selectors import audit_costs, fiche_stt_costs
    from transcriptions.models import TranscriptionRun

    run = TranscriptionRun.objects.create(fiche=fiches["F-LYON-2"])
    usage(fiche=fiches["F-LYON-2"], kind="stt", model="scribe_v2", audio_seconds=900, transcription_run=run)
    usage(fiche=audit.fiche, audit=audit, prompt_tokens=1_000_000)  # a step: 0.15
    usage(fiche=audit.fiche, audit=audit, purpose="rerun", completion_tokens=1_000_000)  # its rerun: 0.60
    assert audit_costs([audit.pk, "00000000-0000-0000-0000-000000000000"]) == {str(audit.pk): Decimal("0.750000")}
    assert fiche_stt_costs([fiches["F-LYON-2"].pk, fiches["F-MRS"].pk]) == {
        fiches["F-LYON-2"].pk: (Decimal("0.500000"), 4500.0)
    }
    reader = make_user(make_role("rt", transcriptions=("r", "ALL"), audits=("r", "ALL")), email="rt@example.com")
    status = auth_client(reader).get("/api/transcriptions/F-LYON-2")
    assert status.status_code == 200, status.content
    assert status.json()["waiting_budget"] is False
    assert status.json()["cost"] == {
        "currency": "USD",
        "stt_cost": "0.500000",
        "audio_seconds": 4500.0,
        "run_stt_cost": "0.100000",
        "run_audio_seconds": 900.0,
    }
    shown = auth_client(reader).get(f"/api/audits/{audit.pk}").json()["cost"]
    assert shown == {
        "currency": "USD",
        "llm_cost": "0.750000",
        "prompt_tokens": 1_000_000,
        "completion_tokens": 1_000_000,
        "cached_tokens": 0,
        "calls": 2,
        "priced_by_default": False,
        "priced_by_default_models": [],
    }
