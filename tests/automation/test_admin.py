"""The automation admin: schedules listed with their type, state, owner, next and last run; edited with
the API's checks (effective config, SSRF, the scope of the fiche ids and groups named) through the
services, so ``next_run_at`` follows; the staff user who adds a schedule owns it; the webhook secret
write-only; the Enable, Disable and Run now actions; runs read-only with filters and their per-fiche
results inline."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.utils import timezone

from accounts.models import User
from automation.models import AutomationRun, AutomationRunFicheResult, AutomationSchedule
from automation.services.schedules import schedule_create
from fiches.models import FicheCache

pytestmark = pytest.mark.django_db

SCHEDULES = "/admin/automation/automationschedule/"
RUNS = "/admin/automation/automationrun/"
SECRET = "admin-secret-never-shown-91ab"


@pytest.fixture
def staff(db) -> User:
    return User.objects.create_superuser(email="ops@example.com", password="ops-pass-2026")


@pytest.fixture
def ops(client, staff):
    client.force_login(staff)
    return client


@pytest.fixture
def nightly(db) -> AutomationSchedule:
    return schedule_create(
        data={"name": "Nightly", "schedule_type": "DAILY", "time_of_day": "02:00", "webhook_secret": SECRET}
    )


@pytest.fixture
def adhoc(db) -> AutomationSchedule:
    return schedule_create(data={"name": "Ad hoc"})


def form(**overrides: Any) -> dict[str, Any]:
    """The schedule form as a browser posts it (unchecked boxes are absent)."""
    data: dict[str, Any] = {
        "name": "From the admin",
        "is_active": "on",
        "schedule_type": "DAILY",
        "time_of_day": "09:30",
        "day_of_week": "",
        "day_of_month": "",
        "timezone": "Europe/Paris",
        "fiche_selection": '{"mode": "relative", "relative_days": 2}',
        "audit_config_ids": "",
        "run_transcription": "on",
        "run_audits": "on",
        "skip_if_transcribed": "on",
        "continue_on_error": "on",
        "max_retries": "1",
        "notify_on_error": "on",
        "notify_emails": "ops@example.com",
        "webhook_url": "",
        "new_webhook_secret": "",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def test_the_schedule_list_shows_type_state_next_and_last_run(ops, nightly, adhoc):
    page = ops.get(SCHEDULES).content.decode()
    for text in ("Nightly", "Ad hoc", "DAILY", "MANUAL", "Next run at", "Last run at"):
        assert text in page, text
    page = ops.get(SCHEDULES, {"schedule_type__exact": "MANUAL"}).content.decode()
    assert "Ad hoc" in page and "Nightly" not in page


def test_adding_a_schedule_runs_the_apis_checks_and_sets_the_next_run(ops, staff):
    response = ops.post(f"{SCHEDULES}add/", form(time_of_day=""))
    assert response.status_code == 200  # the form again, with the error
    assert "A DAILY schedule needs timeOfDay." in response.content.decode()
    response = ops.post(f"{SCHEDULES}add/", form(fiche_selection='{"mode": "relative", "since": 3}'))
    assert response.status_code == 200 and "since: Unknown key" in response.content.decode()
    response = ops.post(f"{SCHEDULES}add/", form(webhook_url="http://127.0.0.1/hook"))
    assert response.status_code == 200 and "loopback address" in response.content.decode()
    assert not AutomationSchedule.objects.exists()

    response = ops.post(f"{SCHEDULES}add/", form(new_webhook_secret=SECRET))
    assert response.status_code == 302, response.context["errors"]
    schedule = AutomationSchedule.objects.get()
    assert (schedule.name, schedule.schedule_type, schedule.time_of_day) == ("From the admin", "DAILY", "09:30")
    assert schedule.fiche_selection == {"mode": "relative", "relative_days": 2}
    assert schedule.notify_emails == ["ops@example.com"] and schedule.webhook_secret == SECRET
    assert schedule.created_by == staff and schedule.owner == staff
    assert schedule.next_run_at is not None and schedule.next_run_at > timezone.now()
    local = schedule.next_run_at.astimezone(ZoneInfo("Europe/Paris"))
    assert (local.hour, local.minute) == (9, 30)


def test_the_admin_checks_the_fiches_named_against_the_owner_and_the_staff_user(ops, staff, make_owner):
    FicheCache.objects.create(fiche_id="L1", sales_date=date(2026, 2, 4), groupe="Lyon-1")
    manual = '{"mode": "manual", "fiche_ids": ["L1"]}'
    # A superuser holds no grant by being one: their schedules touch nothing they may not read.
    response = ops.post(f"{SCHEDULES}add/", form(fiche_selection=manual))
    assert response.status_code == 200
    assert "fiche_ids: One or more fiche ids are unknown" in response.content.decode()
    assert "L1" not in str(response.context["errors"])
    assert not AutomationSchedule.objects.exists()

    staff.roles.set([make_owner("ALL").roles.get()])
    response = ops.post(f"{SCHEDULES}add/", form(fiche_selection=manual))
    assert response.status_code == 302, response.context["errors"]
    assert AutomationSchedule.objects.get().owner == staff
    # A schedule owned by a Lyon-1 user: the staff user (ALL) cannot widen it beyond its owner's scope.
    lyon = make_owner("GROUP", groupes=["Lyon-2"])
    owned = schedule_create(data={"name": "Lyon's"}, user=lyon)
    response = ops.post(f"{SCHEDULES}{owned.pk}/change/", form(name="Lyon's", fiche_selection=manual))
    assert response.status_code == 200 and "outside the scope" in response.content.decode()
    assert ops.get(SCHEDULES).content.decode().count(lyon.email) == 1  # the owner column


def test_the_change_page_never_shows_the_secret_and_keeps_or_clears_it(ops, nightly):
    url = f"{SCHEDULES}{nightly.pk}/change/"
    page = ops.get(url)
    assert page.status_code == 200
    assert SECRET not in page.content.decode() and "Webhook secret set" in page.content.decode()

    edit = form(name="Nightly (edited)", time_of_day="02:00", fiche_selection="{}", notify_emails="")
    response = ops.post(url, edit)
    assert response.status_code == 302, response.context["errors"]
    nightly.refresh_from_db()
    assert nightly.name == "Nightly (edited)" and nightly.webhook_secret == SECRET  # blank: kept
    response = ops.post(url, {**edit, "time_of_day": "05:45", "clear_webhook_secret": "on"})
    assert response.status_code == 302, response.context["errors"]
    nightly.refresh_from_db()
    assert nightly.webhook_secret is None
    local = nightly.next_run_at.astimezone(ZoneInfo("Europe/Paris"))
    assert (local.hour, local.minute) == (5, 45)  # the timing changed: the next run follows

    response = ops.post(url, {**edit, "schedule_type": "WEEKLY"})
    assert response.status_code == 200 and "A WEEKLY schedule needs dayOfWeek." in response.content.decode()
    nightly.refresh_from_db()
    assert nightly.schedule_type == "DAILY"


def test_enable_and_disable_move_the_next_run(ops, nightly):
    response = ops.post(SCHEDULES, {"action": "disable", ACTION_CHECKBOX_NAME: [str(nightly.pk)]})
    assert response.status_code == 302
    nightly.refresh_from_db()
    assert nightly.is_active is False and nightly.next_run_at is None
    ops.post(SCHEDULES, {"action": "enable", ACTION_CHECKBOX_NAME: [str(nightly.pk)]})
    nightly.refresh_from_db()
    assert nightly.is_active is True and nightly.next_run_at is not None and nightly.next_run_at > timezone.now()


def test_run_now_starts_a_manual_run_as_the_admin_user(
    ops, staff, nightly, adhoc, dispatched, django_capture_on_commit_callbacks
):
    AutomationSchedule.objects.filter(pk=adhoc.pk).update(is_active=False)  # inactive ones run too
    with django_capture_on_commit_callbacks(execute=True):
        response = ops.post(
            SCHEDULES, {"action": "run_now", ACTION_CHECKBOX_NAME: [str(nightly.pk), str(adhoc.pk)]}, follow=True
        )
    assert "Started 2 run(s)" in response.content.decode()
    runs = list(AutomationRun.objects.order_by("config__name"))
    assert [(r.schedule_id, r.trigger, r.requested_by) for r in runs] == [
        (adhoc.pk, "manual", staff),
        (nightly.pk, "manual", staff),
    ]
    assert sorted(dispatched) == sorted(("automation.tasks.automation_run_start", (str(r.pk),)) for r in runs)


T0 = datetime(2026, 2, 3, 8, 0, tzinfo=UTC)


def test_runs_are_read_only_with_filters_and_their_fiche_results(ops, nightly, adhoc):
    done = AutomationRun.objects.create(
        schedule=nightly,
        trigger="scheduled",
        slot=T0,
        status="partial",
        config={"name": "Nightly"},
        total_fiches=2,
        successful=1,
        failed=1,
        completed_at=T0 + timedelta(minutes=3),
    )
    failed = AutomationRun.objects.create(schedule=adhoc, status="failed", config={"name": "Ad hoc"}, error="CRM down")
    AutomationRunFicheResult.objects.bulk_create(
        [
            AutomationRunFicheResult(run=done, fiche_id="7001", status="successful", step="done"),
            AutomationRunFicheResult(
                run=done, fiche_id="7002", status="failed", step="transcription", error="provider said no"
            ),
            AutomationRunFicheResult(run=done, fiche_id="7003", status="ignored", step="fetch", reason="no recordings"),
        ]
    )
    short_done, short_failed = str(done.pk)[:8], str(failed.pk)[:8]
    page = ops.get(RUNS).content.decode()
    assert short_done in page and short_failed in page
    for query in ({"status__exact": "failed"}, {"trigger__exact": "manual"}, {"schedule__id__exact": adhoc.pk}):
        page = ops.get(RUNS, query).content.decode()
        assert short_failed in page and short_done not in page, query

    detail = ops.get(f"{RUNS}{done.pk}/change/")
    assert detail.status_code == 200
    text = detail.content.decode()
    for value in ("7001", "7002", "7003", "transcription", "provider said no", "no recordings", "ignored"):
        assert value in text, value
    assert 'name="_save"' not in text  # read-only
    assert ops.post(f"{RUNS}{done.pk}/change/", {"status": "completed"}).status_code == 403
    assert ops.get(f"{RUNS}add/").status_code == 403
    done.refresh_from_db()
    assert done.status == "partial"
