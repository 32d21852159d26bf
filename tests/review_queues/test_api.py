"""Review queues through the API (JWT): queue definitions (audit-configs writers), claims (rules before samples,
one live claim per reviewer, leases that expire, renew and release by the holder only), an item done when its
claimant reviews the audit through the real review endpoint, progress — and the side doors: a GROUP reviewer
never receives another group's item, sees whole-queue figures only for a queue inside their scope, and may
subscribe to a queue's channel only then."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from audits.models import Audit, AuditConfig
from review_queues import services
from review_queues.models import QueueItem, ReviewQueue
from tests.review_queues.test_services import WITHDRAWAL, make_fiche, queue_of, scored_audit

pytestmark = pytest.mark.django_db

PUSHER_AUTH = "/api/realtime/pusher/auth"
PUSHER_KEY, PUSHER_SECRET, SOCKET = "queue-key", "queue-secret", "1234.5678"


@pytest.fixture
def config(db) -> AuditConfig:
    call_command("seed_audit_configs", verbosity=0)
    return AuditConfig.objects.get()


@pytest.fixture
def users(make_role, make_user) -> dict:
    reviewers = make_role("reviewers", audits=("rw", "ALL"))
    return {
        "quality": make_user(
            make_role("quality", audits=("rw", "ALL"), audit_configs=("rw", "ALL")), email="quality@example.com"
        ),
        "ann": make_user(reviewers, email="ann@example.com"),
        "bob": make_user(reviewers, email="bob@example.com"),
        "cid": make_user(reviewers, email="cid@example.com"),
        "lyon": make_user(make_role("lyon", audits=("rw", "GROUP")), email="lyon@example.com", groupes=["Lyon-2"]),
        "reader": make_user(make_role("reader", audits=("r", "ALL")), email="reader@example.com"),
    }


def url(queue: ReviewQueue | int, tail: str = "") -> str:
    return f"/api/review-queues/{queue if isinstance(queue, int) else queue.pk}{tail}"


def at(text: str) -> datetime:
    value = parse_datetime(text)
    assert value is not None
    return value


def error(response) -> str:
    return response.json()["error"]["code"]


def review(client, audit: Audit, status: str = "pass"):
    body = {"control_point_index": 0, "status": status, "comment": "Écouté."}
    return client.post(f"/api/audits/{audit.pk}/steps/{WITHDRAWAL}/reviews", body, format="json")


def test_queue_definitions_need_audit_configs_write_and_valid_input(config, users, auth_client):
    quality, reviewer = auth_client(users["quality"]), auth_client(users["ann"])
    body = {"name": "Lyon", "sample_percent": 10, "seed": 42, "audit_config_ids": [config.pk], "groupes": ["Lyon-2"]}

    denied = reviewer.post("/api/review-queues", body, format="json")
    assert denied.status_code == 403 and error(denied) == "permission_denied"
    created = quality.post("/api/review-queues", {**body, "groupes": ["Lyon-2", " Lyon-2 "]}, format="json")
    assert created.status_code == 201, created.content
    queue = created.json()
    assert queue["rules"] == {
        "rejet": True,
        "needs_review": True,
        "uncertain": True,
        "untrusted": True,
        "sample_percent": 10.0,
        "seed": 42,
    }
    assert (queue["audit_config_ids"], queue["groupes"], queue["is_active"]) == ([config.pk], ["Lyon-2"], True)
    assert queue["progress"] == {"waiting": 0, "claimed": 0, "done": 0, "median_review_seconds": None, "scope": "queue"}
    assert ReviewQueue.objects.get().created_by_id == users["quality"].pk
    # Without a seed, one is drawn and stored (the sample is reproducible from it).
    drawn = quality.post("/api/review-queues", {"name": "Tirage"}, format="json").json()
    assert (
        isinstance(drawn["rules"]["seed"], int)
        and ReviewQueue.objects.get(pk=drawn["id"]).seed == drawn["rules"]["seed"]
    )

    too_much = quality.post("/api/review-queues", {**body, "sample_percent": 150}, format="json")
    assert too_much.status_code == 400 and "sample_percent" in str(too_much.json()["error"]["details"])
    unknown = quality.post("/api/review-queues", {**body, "audit_config_ids": [config.pk, 999999]}, format="json")
    assert unknown.status_code == 400 and unknown.json()["error"]["details"] == {"audit_config_ids": [999999]}
    assert quality.post("/api/review-queues", {"sample_percent": 5}, format="json").status_code == 400  # a name
    assert ReviewQueue.objects.count() == 2  # nothing half-created

    # Reviewers read queues; only audit-configs writers edit or delete them.
    assert reviewer.get("/api/review-queues").json()["count"] == 2
    assert reviewer.get(url(queue["id"])).status_code == 200
    assert auth_client(users["reader"]).get(url(queue["id"])).status_code == 403  # audits read only
    assert reviewer.patch(url(queue["id"]), {"name": "X"}, format="json").status_code == 403
    assert reviewer.delete(url(queue["id"])).status_code == 403
    patched = quality.patch(url(queue["id"]), {"sample_percent": 20, "include_rejet": False}, format="json")
    assert patched.status_code == 200, patched.content
    assert (patched.json()["name"], patched.json()["rules"]["sample_percent"], patched.json()["rules"]["rejet"]) == (
        "Lyon",
        20.0,
        False,
    )
    assert quality.patch(url(queue["id"]), {"sample_percent": 150}, format="json").status_code == 400
    assert quality.patch(url(queue["id"]), {"audit_config_ids": [999999]}, format="json").status_code == 400
    assert ReviewQueue.objects.get(pk=queue["id"]).sample_percent == 20.0
    for method in ("get", "patch", "delete"):
        missing = getattr(quality, method)(url(999999), {}, format="json")
        assert missing.status_code == 404 and error(missing) == "review_queue_not_found", method
    assert reviewer.post(url(999999, "/next")).status_code == 404
    assert quality.delete(url(queue["id"])).status_code == 204
    assert quality.get(url(queue["id"])).status_code == 404

    # Backfill: audit-configs writers, a valid range, an active queue.
    lyon = make_fiche("F-LYON")
    rejet = scored_audit(lyon, config, {(WITHDRAWAL, 0): "fail"})
    target = queue_of(name="Rattrapage")
    assert reviewer.post(url(target, "/backfill"), {}, format="json").status_code == 403
    day = timezone.localdate().isoformat()
    bad = quality.post(url(target, "/backfill"), {"from": day, "to": "2020-01-01"}, format="json")
    assert bad.status_code == 400
    done = quality.post(url(target, "/backfill"), {"from": day, "to": day}, format="json")
    assert done.status_code == 200 and done.json() == {"entered": 1, "sample_floor": 0}
    assert list(QueueItem.objects.filter(queue=target).values_list("audit_id", flat=True)) == [rejet.pk]
    ReviewQueue.objects.filter(pk=target.pk).update(is_active=False)
    asleep = quality.post(url(target, "/backfill"), {}, format="json")
    assert asleep.status_code == 409 and error(asleep) == "review_queue_inactive"


def test_claims_rules_first_one_live_claim_leases_and_done_by_the_claimants_review(
    config, users, auth_client, settings, django_capture_on_commit_callbacks
):
    settings.REVIEW_QUEUE_LEASE_SECONDS = 600
    lyon = make_fiche("F-LYON")
    queue = queue_of(sample_percent=100, seed=5)
    sampled = scored_audit(lyon, config)  # compliant: no rule picks it, the 100 % sample does
    services.enter_audits(queue, Audit.objects.filter(pk=sampled.pk))  # entered first...
    rejet = scored_audit(lyon, config, {(WITHDRAWAL, 0): "fail"})
    services.enter_audits(queue, Audit.objects.filter(pk=rejet.pk))  # ...but a rule comes before a sample
    ann, bob, cid = (auth_client(users[name]) for name in ("ann", "bob", "cid"))

    first = ann.post(url(queue, "/next"))
    assert first.status_code == 200, first.content
    item = first.json()
    assert (item["audit"]["audit_id"], item["reasons"], item["state"], item["resumed"]) == (
        str(rejet.pk),
        ["rejet"],
        "claimed",
        False,
    )
    assert item["claimed_by"] == "ann@example.com"
    lease = at(item["lease_expires_at"]) - at(item["claimed_at"])
    assert lease == timedelta(seconds=600)
    again = ann.post(url(queue, "/next")).json()  # a live claim: the same item, not a second one
    assert (again["id"], again["resumed"]) == (item["id"], True)

    other = bob.post(url(queue, "/next")).json()
    assert (other["audit"]["audit_id"], other["reasons"], other["resumed"]) == (str(sampled.pk), ["sample"], False)
    assert cid.post(url(queue, "/next")).status_code == 204  # nothing left for cid

    # Renew and release: the holder only.
    for action in ("/renew", "/release"):
        refused = bob.post(url(queue, f"/items/{item['id']}{action}"))
        assert refused.status_code == 409 and error(refused) == "item_not_claimed_by_you", action
    assert bob.post(url(queue, "/items/999999/renew")).status_code == 404
    QueueItem.objects.filter(pk=item["id"]).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    renewed = ann.post(url(queue, f"/items/{item['id']}/renew"))  # expired, but nobody took it: still ann's
    assert renewed.status_code == 200 and at(renewed.json()["lease_expires_at"]) > timezone.now()

    # An expired lease returns the item to the next reviewer who pulls.
    QueueItem.objects.filter(pk=item["id"]).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    taken = cid.post(url(queue, "/next")).json()
    assert (taken["id"], taken["claimed_by"], taken["resumed"]) == (item["id"], "cid@example.com", False)
    lost = ann.post(url(queue, f"/items/{item['id']}/renew"))
    assert lost.status_code == 409 and error(lost) == "item_not_claimed_by_you"
    assert ann.post(url(queue, "/next")).status_code == 204
    # ann's late review does not finish cid's item.
    with django_capture_on_commit_callbacks(execute=True):
        assert review(ann, rejet).status_code == 201
    assert QueueItem.objects.get(pk=item["id"]).state == "claimed"

    released = cid.post(url(queue, f"/items/{item['id']}/release"))
    assert released.status_code == 200 and (released.json()["state"], released.json()["claimed_by"]) == (
        "waiting",
        None,
    )
    assert cid.post(url(queue, f"/items/{item['id']}/release")).status_code == 409
    progress = ann.get(url(queue)).json()["progress"]
    assert progress == {"waiting": 1, "claimed": 1, "done": 0, "median_review_seconds": None, "scope": "queue"}

    # bob reviews the audit he claimed (90 s after his claim): the item is done, the progress says so.
    QueueItem.objects.filter(pk=other["id"]).update(claimed_at=timezone.now() - timedelta(seconds=90))
    with django_capture_on_commit_callbacks(execute=True):
        reviewed = bob.post(
            f"/api/audits/{sampled.pk}/steps/{WITHDRAWAL}/reviews",
            {"control_point_index": 0, "status": "pass", "comment": "Conforme."},
            format="json",
        )
    assert reviewed.status_code == 201, reviewed.content
    finished = QueueItem.objects.get(pk=other["id"])
    assert (finished.state, finished.claimed_by_id) == ("done", users["bob"].pk) and finished.done_at is not None
    progress = bob.get(url(queue)).json()["progress"]
    assert (progress["waiting"], progress["claimed"], progress["done"]) == (1, 0, 1)
    assert 90 <= progress["median_review_seconds"] < 120
    assert [i["state"] for i in bob.get(url(queue, "/items")).json()["results"]] == ["waiting", "done"]
    assert [i["id"] for i in bob.get(url(queue, "/items?state=done")).json()["results"]] == [other["id"]]
    # A done item is not claimed again: bob's next is the waiting rule item.
    assert bob.post(url(queue, "/next")).json()["id"] == item["id"]
    ReviewQueue.objects.filter(pk=queue.pk).update(is_active=False)
    inactive = cid.post(url(queue, "/next"))
    assert inactive.status_code == 409 and error(inactive) == "review_queue_inactive"


@pytest.fixture
def pusher(settings):
    settings.PUSHER_APP_ID = "3"
    settings.PUSHER_KEY = PUSHER_KEY
    settings.PUSHER_SECRET = PUSHER_SECRET
    settings.PUSHER_CLUSTER = ""
    settings.PUSHER_HOST = ""
    settings.PUSHER_PORT = None
    settings.PUSHER_USE_TLS = True


def subscribe(client, channel: str):
    return client.post(PUSHER_AUTH, {"socket_id": SOCKET, "channel_name": channel}, format="json")


def signature(channel: str) -> str:
    digest = hmac.new(PUSHER_SECRET.encode(), f"{SOCKET}:{channel}".encode(), hashlib.sha256).hexdigest()
    return f"{PUSHER_KEY}:{digest}"


@pytest.mark.usefixtures("pusher")
def test_a_group_reviewer_never_gets_another_groups_items_nor_the_whole_queue(
    config, users, auth_client, django_capture_on_commit_callbacks
):
    paris_fiche = make_fiche("F-PARIS", groupe="Paris-Est", agent="agent-2")
    lyon_fiche = make_fiche("F-LYON")
    queue = queue_of(name="Toutes")  # every group
    paris = scored_audit(paris_fiche, config, {(WITHDRAWAL, 0): "fail"})
    services.enter_audits(queue, Audit.objects.filter(pk=paris.pk))  # the oldest item is Paris's
    lyon = scored_audit(lyon_fiche, config, {(WITHDRAWAL, 0): "fail"})
    services.enter_audits(queue, Audit.objects.filter(pk=lyon.pk))
    paris_item = QueueItem.objects.get(audit=paris)
    group, everyone = auth_client(users["lyon"]), auth_client(users["ann"])

    # Items: only those of their group, whatever the order.
    listed = group.get(url(queue, "/items")).json()
    assert listed["count"] == 1 and listed["results"][0]["audit"]["audit_id"] == str(lyon.pk)
    claimed = group.post(url(queue, "/next")).json()
    assert claimed["audit"]["audit_id"] == str(lyon.pk)
    # Another group's item does not exist for them, claimed or not.
    for action in ("/renew", "/release"):
        hidden = group.post(url(queue, f"/items/{paris_item.pk}{action}"))
        assert hidden.status_code == 404 and error(hidden) == "review_queue_item_not_found", action
    assert everyone.post(url(queue, "/next")).json()["id"] == paris_item.pk
    assert group.post(url(queue, f"/items/{paris_item.pk}/renew")).status_code == 404
    assert everyone.post(url(queue, f"/items/{paris_item.pk}/release")).status_code == 200  # waiting again
    with django_capture_on_commit_callbacks(execute=True):
        assert review(group, lyon).status_code == 201
    assert QueueItem.objects.get(audit=lyon).state == "done"
    assert group.post(url(queue, "/next")).status_code == 204  # Paris's item waits, but not for them
    assert QueueItem.objects.get(pk=paris_item.pk).state == "waiting"

    # Progress: their part of a queue that reaches beyond their groups; the whole queue inside them.
    assert group.get(url(queue)).json()["progress"] == {
        "waiting": 0,
        "claimed": 0,
        "done": 1,
        "median_review_seconds": pytest.approx(0.0, abs=30),
        "scope": "yours",
    }
    whole = everyone.get(url(queue)).json()["progress"]
    assert (whole["waiting"], whole["done"], whole["scope"]) == (1, 1, "queue")
    listing = {q["id"]: q["progress"]["scope"] for q in group.get("/api/review-queues").json()["results"]}
    lyon_only = queue_of(name="Lyon", groupes=["Lyon-2"])
    both = queue_of(name="Lyon et Paris", groupes=["Lyon-2", "Paris-Est"])
    assert listing == {queue.pk: "yours"}
    assert group.get(url(lyon_only)).json()["progress"]["scope"] == "queue"
    assert group.get(url(both)).json()["progress"]["scope"] == "yours"

    # The queue's channel carries whole-queue counts: only for whoever may read the whole queue.
    for client, target, allowed in (
        (group, queue, False),
        (group, both, False),
        (group, lyon_only, True),
        (everyone, queue, True),
        (auth_client(users["reader"]), lyon_only, False),  # audits read only: no review queues at all
    ):
        channel = f"private-review-queue-{target.pk}"
        response = subscribe(client, channel)
        if allowed:
            assert response.status_code == 200 and response.json() == {"auth": signature(channel)}, channel
        else:
            assert response.status_code == 403 and "auth" not in response.json(), channel
    assert subscribe(everyone, "private-review-queue-999999").status_code == 403


@pytest.mark.usefixtures("pusher")
def test_narrowing_a_queues_groups_does_not_open_its_other_items_counts_to_a_group_reviewer(config, users, auth_client):
    """A queue for every group holds a Paris item and a Lyon item; an editor then narrows it to Lyon (rules
    apply to audits entering from now on: the Paris item stays). The Lyon reviewer's figures and the queue's
    channel must still count only what lies in their scope: the whole-queue counts (the Paris item) are not
    theirs to read."""
    queue = queue_of(name="Toutes")
    paris = scored_audit(make_fiche("F-PARIS", groupe="Paris-Est", agent="agent-2"), config, {(WITHDRAWAL, 0): "fail"})
    lyon = scored_audit(make_fiche("F-LYON"), config, {(WITHDRAWAL, 0): "fail"})
    services.enter_audits(queue, Audit.objects.filter(pk__in=[paris.pk, lyon.pk]))
    narrowed = auth_client(users["quality"]).patch(url(queue), {"groupes": ["Lyon-2"]}, format="json")
    assert narrowed.status_code == 200 and narrowed.json()["groupes"] == ["Lyon-2"]
    assert QueueItem.objects.filter(queue=queue).count() == 2  # the Paris item stays in the queue

    group = auth_client(users["lyon"])
    assert group.get(url(queue, "/items")).json()["count"] == 1  # items: their scope only (as before)
    progress = group.get(url(queue)).json()["progress"]
    assert (progress["waiting"], progress["claimed"], progress["done"]) == (1, 0, 0), progress
    channel = f"private-review-queue-{queue.pk}"
    assert subscribe(group, channel).status_code == 403  # the channel's counts include the Paris item
