"""The admin's review queue pages: queues edited with their whole-queue progress and the backfill action;
items read-only, with the action that returns claimed items to the queue."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.utils import timezone

from accounts.models import User
from audits.models import Audit, AuditConfig
from fiches.models import FicheCache
from review_queues.models import QueueItem, ReviewQueue

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(db) -> User:
    return User.objects.create_superuser(email="ops@example.com", password="ops-pass-2026")


@pytest.fixture
def config(db) -> AuditConfig:
    call_command("seed_audit_configs", verbosity=0)
    return AuditConfig.objects.get()


def completed_audit(config: AuditConfig, fiche_id: str, *, niveau: str, days_ago: int, agent: str = "A-7") -> Audit:
    fiche = FicheCache.objects.create(
        fiche_id=fiche_id,
        sales_date=date.today() - timedelta(days=days_ago),
        groupe="Lyon-2",
        crm_user_id=agent,
        details_success=True,
        details_fetched_at=timezone.now(),
    )
    return Audit.objects.create(
        fiche=fiche,
        config=config,
        config_version=config.current_version,
        status="completed",
        niveau=niveau,
        is_compliant=niveau != "REJET",
        score_percentage=40 if niveau == "REJET" else 95,
        completed_at=timezone.now() - timedelta(days=days_ago),
    )


@pytest.fixture
def queue(config) -> ReviewQueue:
    queue = ReviewQueue.objects.create(name="Lyon REJET", sample_percent=0.0, seed=42, groupes=["Lyon-2"])
    queue.configs.set([config])
    return queue


@pytest.fixture
def items(queue, config, staff) -> dict[str, QueueItem]:
    """One item in each state: waiting, claimed (live lease), claimed with an expired lease, done (60 s)."""
    now = timezone.now()
    week = date.today() - timedelta(days=date.today().weekday())
    rows = {}
    for n, (name, fields) in enumerate(
        {
            "waiting": {"state": "waiting"},
            "claimed": {"state": "claimed", "claimed_at": now, "lease_expires_at": now + timedelta(minutes=10)},
            "expired": {
                "state": "claimed",
                "claimed_at": now - timedelta(hours=1),
                "lease_expires_at": now - timedelta(minutes=45),
            },
            "done": {"state": "done", "claimed_at": now - timedelta(seconds=60), "done_at": now},
        }.items()
    ):
        audit = completed_audit(config, f"F-{n}", niveau="REJET", days_ago=1)
        claimed_by = staff if fields["state"] != "waiting" else None
        rows[name] = QueueItem.objects.create(
            queue=queue, audit=audit, reasons=["rejet"], agent="A-7", week=week, claimed_by=claimed_by, **fields
        )
    return rows


def test_the_queue_list_shows_the_whole_queue_progress(items, queue, staff, client):
    client.force_login(staff)
    response = client.get("/admin/review_queues/reviewqueue/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "Lyon REJET" in page
    assert '<td class="field-waiting">2</td>' in page  # the expired claim counts as waiting
    assert '<td class="field-claimed">1</td>' in page and '<td class="field-done">1</td>' in page
    assert '<td class="field-median_review_seconds">60.0</td>' in page
    assert f'href="/admin/review_queues/queueitem/?queue__id__exact={queue.pk}"' in page
    view = client.get(f"/admin/review_queues/reviewqueue/{queue.pk}/change/")
    assert view.status_code == 200 and 'name="configs"' in view.content.decode()
    assert client.get("/admin/review_queues/reviewqueue/add/").status_code == 200


def test_a_queue_is_created_and_edited_in_the_admin(config, staff, client):
    client.force_login(staff)
    form = {
        "name": "Échantillon 10 %",
        "description": "",
        "is_active": "on",
        "include_rejet": "on",
        "include_needs_review": "on",
        "sample_percent": "10",
        "seed": "1234",
        "configs": [str(config.pk)],
        "groupes": "Paris-1, Lyon-2,Paris-1",
    }
    response = client.post("/admin/review_queues/reviewqueue/add/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    queue = ReviewQueue.objects.get()
    assert queue.created_by == staff and queue.groupes == ["Lyon-2", "Paris-1"]
    assert list(queue.configs.all()) == [config] and queue.seed == 1234 and queue.sample_percent == 10.0
    assert not queue.include_uncertain and not queue.include_untrusted
    response = client.post(
        f"/admin/review_queues/reviewqueue/{queue.pk}/change/", {**form, "sample_percent": "150", "configs": []}
    )
    assert response.status_code == 200 and "less than or equal to 100" in response.content.decode()
    response = client.post(f"/admin/review_queues/reviewqueue/{queue.pk}/change/", {**form, "configs": []})
    assert response.status_code == 302
    queue.refresh_from_db()
    assert list(queue.configs.all()) == [] and queue.created_by == staff


def test_the_backfill_action_enters_the_audits_of_the_last_30_days(queue, config, staff, client):
    recent = completed_audit(config, "F-RECENT", niveau="REJET", days_ago=3)
    completed_audit(config, "F-OLD", niveau="REJET", days_ago=45)
    completed_audit(config, "F-GOOD", niveau="EXCELLENT", days_ago=3)  # no rule, sample 0 %
    inactive = ReviewQueue.objects.create(name="Off", is_active=False)
    client.force_login(staff)
    response = client.post(
        "/admin/review_queues/reviewqueue/",
        {"action": "backfill", "_selected_action": [str(queue.pk), str(inactive.pk)]},
        follow=True,
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "Lyon REJET: 1 audit(s) entered by the rules and the sample, 0 more" in page
    assert "Off: inactive, nothing entered." in page
    item = QueueItem.objects.get()
    assert item.queue == queue and item.audit == recent and item.reasons == ["rejet"] and item.state == "waiting"


def test_the_item_list_is_read_only_and_returns_claimed_items_to_the_queue(items, queue, staff, client):
    client.force_login(staff)
    response = client.get("/admin/review_queues/queueitem/")
    assert response.status_code == 200
    page = response.content.decode()
    assert f'href="/admin/audits/audit/{items["done"].audit_id}/change/"' in page and "fiche F-3" in page
    assert "return_to_queue" in page and "delete_selected" not in page
    assert client.get("/admin/review_queues/queueitem/?state__exact=claimed").context["cl"].result_count == 2
    assert "claimed, lease expired (waiting again)" in page
    assert client.get(f"/admin/review_queues/queueitem/?queue__id__exact={queue.pk}").context["cl"].result_count == 4
    view = client.get(f"/admin/review_queues/queueitem/{items['claimed'].pk}/change/")
    assert view.status_code == 200 and 'name="_save"' not in view.content.decode()
    assert client.get("/admin/review_queues/queueitem/add/").status_code == 403
    response = client.post(
        "/admin/review_queues/queueitem/",
        {"action": "return_to_queue", "_selected_action": [str(i.pk) for i in items.values()]},
        follow=True,
    )
    page = response.content.decode()
    assert "Returned 2 item(s) to the queue." in page and "2 item(s) were not claimed" in page
    states = {name: QueueItem.objects.get(pk=item.pk) for name, item in items.items()}
    for name in ("claimed", "expired"):
        row = states[name]
        assert row.state == "waiting" and row.claimed_by is None, name
        assert row.claimed_at is None and row.lease_expires_at is None, name
    assert states["done"].state == "done" and states["done"].claimed_by == staff  # untouched
    assert QueueItem.objects.count() == 4


def test_a_staff_user_who_may_only_view_items_gets_no_action(items, client):
    viewer = User.objects.create_user(email="viewer@example.com", password="viewer-pass-2026", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename__in=["view_queueitem", "view_reviewqueue"]))
    client.force_login(viewer)
    response = client.get("/admin/review_queues/queueitem/")
    assert response.status_code == 200 and "return_to_queue" not in response.content.decode()
    client.post(
        "/admin/review_queues/queueitem/",
        {"action": "return_to_queue", "_selected_action": [str(items["claimed"].pk)]},
    )
    assert QueueItem.objects.get(pk=items["claimed"].pk).state == "claimed"
