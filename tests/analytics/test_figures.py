"""Compliance figures against a fixture computed by hand: the audit that counts (latest completed of the active
version, a pin wins, never an evaluation audit, not an old version's), per audit and per control point, by
period, scope filtering (GROUP, SELF, none), the worst rows with their change, the fiche trigger (a group
change reaches the facts at once), the hooks and the reconciler, and the exports (CSV and XLSX)."""

from __future__ import annotations

import csv
import io
from collections import Counter
from datetime import date, timedelta

import pytest
from django.db import connection
from django.utils import timezone
from openpyxl import load_workbook

from accounts.grants import Scope
from analytics import services
from analytics.models import AuditFact, PointDay, PointFact
from audits.models import Audit, AuditConfig, AuditStepResult, ControlPointResult
from audits.services.configs import config_create, config_update
from audits.services.reviews import recompute_audit, rescore_step
from fiches.models import FicheCache
from tests.support import queued_tasks

pytestmark = pytest.mark.django_db

CONFIG = {
    "name": "Petit contrôle",
    "description": "",
    "is_active": True,
    "thresholds": {"excellent": 90, "bon": 75, "acceptable": 60},
    "steps": [
        {
            "name": "Présentation",
            "instructions": "",
            "weight": 50,
            "is_critical": False,
            "pass_ratio": 1.0,
            "control_points": [
                {"question": "Numéro ORIAS ?", "evidence_hint": "ORIAS", "is_critical": True},
                {"question": "Nom du cabinet ?", "evidence_hint": "cabinet"},
            ],
        },
        {
            "name": "Rétractation",
            "instructions": "",
            "weight": 50,
            "is_critical": False,
            "pass_ratio": 1.0,
            "control_points": [
                {"question": "Délai de 14 jours ?", "evidence_hint": "quatorze jours"},
                {"question": "Si devis : envoi ?", "evidence_hint": "devis", "conditional": True},
            ],
        },
    ],
}

RANGE = {"from": "2026-03-01", "to": "2026-04-30"}


@pytest.fixture
def config(db) -> AuditConfig:
    return config_create(data=CONFIG)


def fiche(fiche_id: str, sold: date, *, groupe: str, agent: str, name: str, produit: str) -> FicheCache:
    return FicheCache.objects.create(
        fiche_id=fiche_id,
        sales_date=sold,
        groupe=groupe,
        crm_user_id=agent,
        agent_name=name,
        produit=produit,
        details_success=True,
        details_fetched_at=timezone.now(),
    )


def audit(
    fiche: FicheCache,
    config: AuditConfig,
    verdicts: dict[tuple[int, int], str] | None = None,
    *,
    completed_minutes_ago: int = 0,
    purpose: str = "production",
    version=None,
) -> Audit:
    """A completed audit scored in code: every point passed but ``verdicts``."""
    verdicts = verdicts or {}
    version = version or config.current_version
    made = Audit.objects.create(
        fiche=fiche,
        config=config,
        config_version=version,
        status="completed",
        purpose=purpose,
        completed_at=timezone.now() - timedelta(minutes=completed_minutes_ago),
    )
    for step in version.steps.all():
        row = AuditStepResult.objects.create(audit=made, step=step, position=step.position, status="completed")
        for point in step.control_points.all():
            status = verdicts.get((step.position, point.index), "pass")
            ControlPointResult.objects.create(step_result=row, index=point.index, ai_status=status, status=status)
        rescore_step(row)
    recompute_audit(made)
    made.refresh_from_db()
    return made


@pytest.fixture
def world(config):
    """The hand-computed fixture (see the module's expectations)."""
    old_version = config.current_version
    # A later version is the active one: audits of the first version no longer count (unless pinned).
    config_update(config_id=config.pk, patch={"description": "v2"})
    config.refresh_from_db()
    f1 = fiche("F1", date(2026, 3, 2), groupe="G1", agent="a1", name="Alice", produit="Santé")
    f2 = fiche("F2", date(2026, 3, 3), groupe="G1", agent="a1", name="Alice", produit="Santé")
    f3 = fiche("F3", date(2026, 3, 10), groupe="G2", agent="b1", name="Bob", produit="Obsèques")
    f4 = fiche("F4", date(2026, 4, 1), groupe="G2", agent="b1", name="Bob", produit="Obsèques")
    f5 = fiche("F5", date(2026, 3, 4), groupe="G1", agent="a1", name="Alice", produit="Santé")
    f6 = fiche("F6", date(2026, 2, 10), groupe="G1", agent="a1", name="Alice", produit="Santé")
    audit(f1, config)  # 100 %, EXCELLENT
    audit(f2, config, completed_minutes_ago=30)  # superseded by the next one
    audit(f2, config, {(2, 1): "fail"})  # 75 %, BON
    pinned = audit(f3, config, {(1, 0): "fail"}, completed_minutes_ago=30)  # critical miss: REJET, 75 %
    audit(f3, config)  # later and clean, but the earlier one is pinned
    Audit.objects.filter(pk=pinned.pk).update(pinned_at=timezone.now())
    audit(f4, config, {(2, 0): "uncertain", (2, 1): "not_applicable"})  # 50 %, INSUFFISANT, needs review
    audit(f4, config, {(1, 0): "fail", (1, 1): "fail", (2, 0): "fail"}, purpose="evaluation")  # never counts
    audit(f5, config, {(1, 1): "fail"}, version=old_version)  # an old version's: F5 has no audit that counts
    audit(f6, config, {(2, 1): "fail"})  # February: the previous period of the worst rows
    services.rebuild_config(config.pk)
    return {"config": config, "fiches": {f.fiche_id: f for f in (f1, f2, f3, f4, f5, f6)}, "pinned": pinned}


def assert_rollup_matches_the_facts() -> None:
    """The per-day rollup is exactly the point facts counted per (config, day, point, status, group, product)."""
    keys = ("config_id", "sales_date", "step_position", "control_point_index", "is_critical", "status", "groupe")
    facts: Counter[tuple] = Counter()
    for row in PointFact.objects.values_list(*keys, "produit"):
        facts[row] += 1
    rollup = {row[:-1]: row[-1] for row in PointDay.objects.values_list(*keys, "produit", "n")}
    assert rollup == dict(facts)


def get(client, path: str, **params):
    response = client.get(f"/api/analytics/{path}", params)
    assert response.status_code == 200, response.content
    return response.json()


def rows_by_key(payload) -> dict:
    return {r["key"]: r for r in payload["rows"]}


def test_overall_figures_count_only_the_audit_that_counts(world, api):
    client = api(scope=Scope.ALL)
    [row] = get(client, "compliance", **RANGE)["rows"]
    assert row["audits"] == 4  # F1, F2 (latest), F3 (pinned), F4 (production); not F5 (old version), not F6
    assert row["compliant"] == 2 and row["compliance_rate"] == 0.5
    assert row["average_score"] == 75.0  # (100 + 75 + 75 + 50) / 4
    assert row["niveaux"] == {"EXCELLENT": 1, "BON": 1, "ACCEPTABLE": 0, "INSUFFISANT": 1, "REJET": 1}
    assert row["critical_misses"] == 1 and row["audits_with_critical_miss"] == 1
    assert row["needs_review"] == 1
    counted = set(AuditFact.objects.values_list("audit_id", flat=True))
    assert world["pinned"].pk in counted
    assert not Audit.objects.filter(pk__in=counted, purpose="evaluation").exists()


def test_per_agent_group_product_version_and_month(world, api):
    client = api(scope=Scope.ALL)
    agents = rows_by_key(get(client, "compliance", by="agent", **RANGE))
    assert agents["a1"]["label"] == "Alice" and agents["a1"]["audits"] == 2 and agents["a1"]["compliance_rate"] == 1.0
    assert agents["a1"]["average_score"] == 87.5
    assert agents["b1"]["audits"] == 2 and agents["b1"]["compliance_rate"] == 0.0
    assert agents["b1"]["average_score"] == 62.5 and agents["b1"]["critical_misses"] == 1
    groups = rows_by_key(get(client, "compliance", by="group", **RANGE))
    assert {k: r["audits"] for k, r in groups.items()} == {"G1": 2, "G2": 2}
    products = rows_by_key(get(client, "compliance", by="product", **RANGE))
    assert products["Santé"]["compliance_rate"] == 1.0 and products["Obsèques"]["compliance_rate"] == 0.0
    versions = get(client, "compliance", by="config_version", **RANGE)["rows"]
    # F3's pinned audit is of the active version too (made after the update): one version row.
    assert [(r["label"], r["audits"]) for r in versions] == [(f"{CONFIG['name']} v2", 4)]
    months = get(client, "compliance", period="month", **RANGE)["rows"]
    assert [(r["period"], r["audits"], r["compliance_rate"]) for r in months] == [
        ("2026-03-01", 3, 0.6667),
        ("2026-04-01", 1, 0.0),
    ]
    weeks = get(client, "compliance", by="agent", period="week", **RANGE)["rows"]
    assert [(r["key"], r["period"], r["audits"]) for r in weeks] == [
        ("a1", "2026-03-02", 2),
        ("b1", "2026-03-09", 1),
        ("b1", "2026-03-30", 1),
    ]


def test_per_control_point(world, api):
    config = world["config"]
    points = rows_by_key(get(api(scope=Scope.ALL), "compliance", by="control_point", **RANGE))
    k = lambda step, index: f"{config.pk}:{step}:{index}"  # noqa: E731
    assert (points[k(1, 0)]["applicable"], points[k(1, 0)]["passed"], points[k(1, 0)]["failed"]) == (4, 3, 1)
    assert points[k(1, 0)]["compliance_rate"] == 0.75 and points[k(1, 0)]["critical_misses"] == 1
    assert points[k(1, 0)]["is_critical"] and points[k(1, 0)]["label"] == "Numéro ORIAS ?"
    assert points[k(1, 1)]["compliance_rate"] == 1.0
    assert (points[k(2, 0)]["passed"], points[k(2, 0)]["uncertain"], points[k(2, 0)]["compliance_rate"]) == (3, 1, 0.75)
    two_one = points[k(2, 1)]
    assert (two_one["applicable"], two_one["passed"], two_one["failed"], two_one["not_applicable"]) == (3, 2, 1, 1)
    assert two_one["compliance_rate"] == 0.6667 and two_one["critical_misses"] == 0


def test_an_agents_point_figures_come_from_the_facts_and_agree_with_the_rollup(world, api):
    config = world["config"]
    by_agent = rows_by_key(get(api(scope=Scope.ALL), "compliance", by="control_point", agent="a1", **RANGE))
    by_group = rows_by_key(get(api(scope=Scope.ALL), "compliance", by="control_point", group="G1", **RANGE))
    assert by_agent == by_group  # a1 is G1's only agent: the facts and the rollup give the same figures
    assert (by_agent[f"{config.pk}:2:1"]["applicable"], by_agent[f"{config.pk}:2:1"]["passed"]) == (2, 1)


def test_scope_filters_every_figure(world, api):
    group = api(scope=Scope.GROUP, groupes=["G1"])
    [row] = get(group, "compliance", **RANGE)["rows"]
    assert (row["audits"], row["compliance_rate"]) == (2, 1.0)
    assert set(rows_by_key(get(group, "compliance", by="agent", **RANGE))) == {"a1"}
    points = rows_by_key(get(group, "compliance", by="control_point", **RANGE))
    two_one = points[f"{world['config'].pk}:2:1"]
    assert (two_one["applicable"], two_one["passed"]) == (2, 1)  # F1 pass, F2 fail
    own = api(scope=Scope.SELF, crm_user_id="b1")
    [row] = get(own, "compliance", **RANGE)["rows"]
    assert row["audits"] == 2 and row["compliant"] == 0
    # Asking for another group's figures through a filter gives nothing, not a side door.
    assert get(group, "compliance", group="G2", **RANGE)["rows"] == []
    assert get(own, "worst", by="agent", min_count=1, **RANGE)["rows"][0]["key"] == "b1"
    assert api(scope=None).get("/api/analytics/compliance").status_code == 403


def test_worst_rows_first_with_the_change(world, api):
    payload = get(api(scope=Scope.ALL), "worst", by="control_point", min_count=1, **RANGE)
    assert (payload["previous_from"], payload["previous_to"]) == ("2025-12-30", "2026-02-28")
    first = payload["rows"][0]
    assert first["key"] == f"{world['config'].pk}:2:1" and first["compliance_rate"] == 0.6667
    assert first["previous"] == {"compliance_rate": 0.0, "applicable": 1}  # F6, February
    assert first["change"] == 0.6667
    assert [r["compliance_rate"] for r in payload["rows"]] == sorted(r["compliance_rate"] for r in payload["rows"])
    agents = get(api(scope=Scope.ALL), "worst", by="agent", min_count=2, **RANGE)["rows"]
    assert [r["key"] for r in agents] == ["b1", "a1"] and agents[0]["change"] is None  # b1 sold nothing before
    assert agents[1]["previous"] == {"compliance_rate": 1.0, "audits": 1} and agents[1]["change"] == 0.0  # F6: BON


def test_bad_queries_are_refused_clearly(world, api):
    client = api(scope=Scope.ALL)
    for params, field in (
        ({"from": "2026-13-01"}, "from"),
        ({"from": "2026-05-01", "to": "2026-04-01"}, "from"),
        ({"from": "2020-01-01", "to": "2026-01-01"}, "to"),
        ({"by": "planet"}, "by"),
        ({"period": "year"}, "period"),
        ({"config_id": "x"}, "config_id"),
    ):
        response = client.get("/api/analytics/compliance", params)
        assert response.status_code == 400, params
        body = response.json()
        assert body["error"]["code"] == "invalid_analytics_query" and field in body["error"]["details"]
    assert client.get("/api/analytics/worst", {"by": "group"}).status_code == 400
    assert client.get("/api/analytics/worst", {"limit": "0"}).status_code == 400


def test_a_fiche_moving_group_moves_its_facts_in_the_same_transaction(world, api):
    FicheCache.objects.filter(fiche_id="F1").update(groupe="G3", agent_name="Alice M.")
    group = api(scope=Scope.GROUP, groupes=["G1"])
    [row] = get(group, "compliance", **RANGE)["rows"]
    assert row["audits"] == 1  # F2 only
    assert set(PointFact.objects.filter(audit__fiche__fiche_id="F1").values_list("groupe", flat=True)) == {"G3"}
    assert AuditFact.objects.get(fiche__fiche_id="F1").agent_name == "Alice M."
    points = rows_by_key(get(group, "compliance", by="control_point", **RANGE))
    assert points[f"{world['config'].pk}:2:1"]["applicable"] == 1  # the rollup moved with the fiche
    # A sale moved to another day leaves the old day's rollup and joins the new one's.
    FicheCache.objects.filter(fiche_id="F2").update(sales_date=date(2026, 4, 2))
    assert_rollup_matches_the_facts()
    months = get(group, "compliance", by="control_point", period="month", **RANGE)["rows"]
    assert {r["period"] for r in months} == {"2026-04-01"}


def test_the_hooks_send_a_refresh_and_the_reconciler_repairs_a_lost_one(world, django_capture_on_commit_callbacks):
    config, f2 = world["config"], world["fiches"]["F2"]
    with django_capture_on_commit_callbacks(execute=True):
        newest = audit(f2, config, {(1, 1): "fail", (2, 1): "fail"})
    sent = [t for t in queued_tasks("default") if t.name == "analytics.tasks.analytics_refresh"]
    assert [f2.pk, config.pk] in sent[-1].args[0]
    # The message is lost: the fact still names the superseded audit until the reconciler runs.
    assert AuditFact.objects.get(fiche=f2).audit_id != newest.pk
    assert (f2.pk, config.pk) in services.stale_pairs()
    assert services.reconcile()["refreshed"] >= 1
    fact = AuditFact.objects.get(fiche=f2)
    assert fact.audit_id == newest.pk and fact.score_percentage == newest.score_percentage
    assert services.stale_pairs() == []
    # A review changes a verdict without a new audit: the fact follows on refresh.
    ControlPointResult.objects.filter(step_result__audit=newest, step_result__position=1, index=1).update(
        human_status="pass"
    )
    recompute_audit(newest)
    assert (f2.pk, config.pk) in services.stale_pairs()
    services.refresh_pairs([(f2.pk, config.pk)])
    statuses = dict(
        PointFact.objects.filter(audit=newest).values_list("step_position", "status").filter(control_point_index=1)
    )
    assert statuses == {1: "pass", 2: "fail"}
    assert_rollup_matches_the_facts()


def test_activating_another_version_rebuilds_the_config(world, django_capture_on_commit_callbacks):
    config = world["config"]
    with django_capture_on_commit_callbacks(execute=True):
        config_update(config_id=config.pk, patch={"description": "v3"})
    sent = [t for t in queued_tasks("default") if t.name == "analytics.tasks.analytics_rebuild_config"]
    assert sent and sent[-1].args == [config.pk]
    services.rebuild_config(config.pk)
    # Nothing was audited with v3 yet: only the pinned audit still counts.
    assert list(AuditFact.objects.values_list("audit_id", flat=True)) == [world["pinned"].pk]
    assert_rollup_matches_the_facts()


def test_exports_stream_the_same_rows(world, api):
    client = api(scope=Scope.ALL)
    response = client.get("/api/analytics/export", {"by": "agent", **RANGE})
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"].startswith("text/csv")
    text = b"".join(response.streaming_content).decode("utf-8-sig")
    table = list(csv.DictReader(io.StringIO(text)))
    assert [(r["key"], r["audits"], r["compliance_rate"]) for r in table] == [("a1", "2", "1.0"), ("b1", "2", "0.0")]
    assert table[1]["niveau_REJET"] == "1"
    audits = client.get("/api/analytics/export", {"table": "audits", "file_format": "xlsx", **RANGE})
    assert audits.status_code == 200
    assert audits["Content-Type"] == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    sheet = load_workbook(io.BytesIO(b"".join(audits.streaming_content)), read_only=True).active
    values = list(sheet.values)
    assert values[0][:3] == ("audit_id", "fiche_id", "sales_date")
    assert sorted(v[1] for v in values[1:]) == ["F1", "F2", "F3", "F4"]
    assert_rollup_matches_the_facts()
    # Scope holds in the export too.
    own = api(scope=Scope.SELF, crm_user_id="b1")
    text = b"".join(own.get("/api/analytics/export", {"table": "audits", **RANGE}).streaming_content).decode(
        "utf-8-sig"
    )
    assert sorted(r["fiche_id"] for r in csv.DictReader(io.StringIO(text))) == ["F3", "F4"]
    assert client.get("/api/analytics/export", {"file_format": "pdf"}).status_code == 400


def test_point_facts_match_the_results(world):
    """Every verdict of every audit that counts has one point fact, and nothing else has one."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM audit_control_point_results cp "
            "JOIN audit_step_results sr ON sr.id = cp.step_result_id "
            "WHERE sr.audit_id IN (SELECT audit_id FROM analytics_audit_facts)"
        )
        assert cursor.fetchone()[0] == PointFact.objects.count() == 5 * 4
    assert set(PointFact.objects.values_list("audit_id", flat=True)) == set(
        AuditFact.objects.values_list("audit_id", flat=True)
    )
