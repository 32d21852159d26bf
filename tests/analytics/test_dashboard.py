"""The admin's compliance dashboard: reached from the Analytics section, it charts the hand-computed fixture of
``test_figures`` (compliance per group per month, the worst control points with their change, the niveaux),
embeds the same figures as JSON and as tables, loads its scripts from our static files only, and reads
inside the admin user's own audits scope: a group manager sees their group, a staff user without the audits
read grant gets a 403."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.grants import Scope
from analytics import admin as analytics_admin
from tests.analytics.test_figures import CONFIG, RANGE, config, world  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db

URL = "/admin/analytics/auditfact/dashboard/"
MONTHS = {**RANGE, "period": "month", "min_count": "1"}


@pytest.fixture
def staff(make_role, make_user):
    """``staff(scope=Scope.GROUP, groupes=[...])``: a staff user (no Django model permission) whose role reads
    audits at that scope (``None``: a role without the audits grant)."""
    made = iter(range(1000))

    def _make(*, scope: Scope | None, **fields):
        n = next(made)
        grants = {"audits": ("r", scope.value)} if scope is not None else {"fiches": ("r", "ALL")}
        return make_user(make_role(f"dashboard-{n}", **grants), is_staff=True, **fields)

    return _make


def page_data(response) -> dict:
    match = re.search(r'<script id="analytics-data" type="application/json">(.*?)</script>', response.text, re.S)
    assert match, "no embedded data"
    return json.loads(match.group(1))


def series(data: dict) -> dict[str, list]:
    return {s["label"]: [p and p["percent"] for p in s["points"]] for s in data["trend"]["series"]}


def test_the_dashboard_charts_the_figures_of_the_range(world, staff, client):  # noqa: F811
    client.force_login(staff(scope=Scope.ALL))
    response = client.get(URL, MONTHS)
    assert response.status_code == 200
    page = response.text
    for canvas in ("chart-trend", "chart-worst", "chart-niveaux"):
        assert f'<canvas id="{canvas}"' in page
    data = page_data(response)
    assert data["period"] == "month" and data["labels"] == ["Mar 2026", "Apr 2026"]
    # Compliance per group per month (F1 and F2 in G1; F3 pinned REJET and F4 in G2), and overall.
    assert series(data) == {"G1": [100.0, None], "G2": [0.0, 0.0]}
    overall = data["trend"]["overall"]
    assert overall["audits"] == 4 and [p["percent"] for p in overall["points"]] == [66.7, 0.0]
    assert [(p["compliant"], p["audits"]) for p in overall["points"]] == [(2, 3), (0, 1)]
    # The worst control point first, with the change against February (F6: 0 of 1).
    first = data["worst"][0]
    assert first["question"] == CONFIG["steps"][1]["control_points"][1]["question"]
    assert (first["point"], first["percent"], first["passed"], first["applicable"]) == ("2.1", 66.7, 2, 3)
    assert (first["previous_percent"], first["change"]) == (0.0, 66.7)
    assert [r["percent"] for r in data["worst"]] == sorted(r["percent"] for r in data["worst"])
    orias = next(r for r in data["worst"] if r["point"] == "1.0")
    assert orias["critical"] and orias["percent"] == 75.0
    assert data["niveaux"]["counts"] == {
        "EXCELLENT": [1, 0],
        "BON": [1, 0],
        "ACCEPTABLE": [0, 0],
        "INSUFFISANT": [0, 1],
        "REJET": [1, 0],
    }
    # The same figures are in the tables, readable without JavaScript.
    assert 'id="table-trend"' in page and "66.7 %" in page and "2/3" in page
    assert 'id="table-worst"' in page and "Si devis : envoi ?" in page and "▲ +66.7 pts" in page
    assert 'id="table-niveaux"' in page
    assert response.context["summary"]["audits"] == 4 and response.context["summary"]["percent"] == 50.0


def test_the_page_loads_only_local_scripts_and_no_inline_one(world, staff, client):  # noqa: F811
    client.force_login(staff(scope=Scope.ALL))
    page = client.get(URL, MONTHS).text
    scripts = re.findall(r"<script\b([^>]*)>", page)
    sources = [m.group(1) for attrs in scripts if (m := re.search(r'src="([^"]+)"', attrs))]
    assert "/static/analytics/vendor/chart.umd.min.js" in sources and "/static/analytics/dashboard.js" in sources
    assert all(src.startswith("/static/") for src in sources), sources
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # no CDN, no external stylesheet
    # Every script is a file or the JSON data: a CSP without 'unsafe-inline' would not block anything.
    inline = [attrs for attrs in scripts if "src=" not in attrs]
    assert inline == [' id="analytics-data" type="application/json"']


def test_the_dashboard_is_reached_from_the_admin(world, staff, client):  # noqa: F811
    client.force_login(staff(scope=Scope.ALL))
    index = client.get("/admin/").text
    assert "/admin/analytics/auditfact/" in index  # the Analytics section is listed
    assert URL in client.get("/admin/analytics/").text
    changelist = client.get("/admin/analytics/auditfact/")
    assert changelist.status_code == 200 and URL in changelist.text
    assert sorted(re.findall(r">(F\d)</a>", changelist.text)) == ["F1", "F2", "F3", "F4", "F6"]


def test_a_group_manager_sees_only_their_groups_figures(world, staff, client):  # noqa: F811
    client.force_login(staff(scope=Scope.GROUP, groupes=["G1"]))
    response = client.get(URL, MONTHS)
    assert response.status_code == 200
    data = page_data(response)
    assert series(data) == {"G1": [100.0, None]}
    assert data["trend"]["overall"]["audits"] == 2
    by_point = {r["point"]: r for r in data["worst"]}
    assert (by_point["2.1"]["passed"], by_point["2.1"]["applicable"]) == (1, 2)  # F1 pass, F2 fail
    assert sum(sum(counts) for counts in data["niveaux"]["counts"].values()) == 2
    assert "G2" not in response.text and "your groups (G1)" in response.text
    changelist = client.get("/admin/analytics/auditfact/").text
    assert sorted(re.findall(r">(F\d)</a>", changelist)) == ["F1", "F2", "F6"]
    # Another group's manager gets an empty dashboard, not G1's figures.
    client.force_login(staff(scope=Scope.GROUP, groupes=["G9"]))
    response = client.get(URL, MONTHS)
    assert response.status_code == 200 and not response.context["has_data"]
    assert 'id="analytics-data"' not in response.text and "G1" not in response.text


def test_staff_without_the_audits_grant_gets_403(world, staff, make_user, client):  # noqa: F811
    client.force_login(staff(scope=None))
    response = client.get(URL, MONTHS)
    assert response.status_code == 403
    assert 'id="analytics-data"' not in response.text and "66.7" not in response.text
    assert client.get("/admin/analytics/auditfact/").status_code == 403
    assert "/admin/analytics/" not in client.get("/admin/").text
    # A superuser's Django permissions are not an audits grant: the figures follow the grants.
    client.force_login(make_user(is_staff=True, is_superuser=True))
    assert client.get(URL, MONTHS).status_code == 403
    # Not staff: the admin's login page.
    client.force_login(make_user())
    assert client.get(URL).status_code == 302


def test_the_filters_default_to_the_last_90_days_per_week_and_bad_ones_are_named(world, staff, client):  # noqa: F811
    client.force_login(staff(scope=Scope.ALL))
    today = timezone.localdate()
    response = client.get(URL)
    q = response.context["q"]
    assert (q.date_from, q.date_to, q.period) == (today - timedelta(days=89), today, "week")
    assert not response.context["has_data"]  # the fixture sold in March and April 2026
    response = client.get(URL, {"from": "2026-13-01", "period": "year", "min_count": "0"})
    assert response.status_code == 200
    assert set(response.context["errors"]) == {"from", "period", "min_count"}
    assert response.context["q"].date_from == today - timedelta(days=89)
    weeks = page_data(client.get(URL, {**RANGE, "period": "week", "min_count": "1"}))
    assert weeks["periods"][0] == "2026-02-23" and weeks["periods"][-1] == "2026-04-27"  # Mondays
    assert len(weeks["labels"]) == 10 and sum(p["audits"] for p in weeks["trend"]["overall"]["points"] if p) == 4
    # Only the chosen config's figures.
    other = client.get(URL, {**MONTHS, "config_id": str(world["config"].pk + 1000)})
    assert not other.context["has_data"]
    assert analytics_admin.DASHBOARD_DAYS == 90
