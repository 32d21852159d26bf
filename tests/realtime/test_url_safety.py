"""SSRF guard of webhook URLs (``realtime.url_safety``), at request time and again at send time.

No DNS runs here: names are answered by ``fake_dns`` (a patched ``socket.getaddrinfo``). The send-time
checks are proven by a bare listening socket that must see no connection at all.
"""

from __future__ import annotations

import pytest

from fiches.notifications import send_job_webhook
from realtime.models import WebhookDeliveryAttempt
from realtime.url_safety import UnsafeWebhookUrl, validate_webhook_url
from realtime.webhooks import attempt_delivery

from .conftest import make_job

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"

HOSTILE = [
    ("http://127.0.0.1/", "loopback"),
    ("http://127.0.0.1:8080/hook", "loopback"),
    ("http://localhost/", "internal"),
    ("http://LOCALHOST./", "internal"),
    ("http://api.localhost/", "internal"),
    ("http://[::1]/", "loopback"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://0/", "unspecified"),
    ("http://10.0.0.1/", "private"),
    ("http://172.16.5.4/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://169.254.169.254/latest/meta-data", "metadata"),
    ("http://0xa9.0xfe.0xa9.0xfe/latest/meta-data", "metadata"),
    ("http://[::ffff:169.254.169.254]/", "metadata"),
    ("http://[fd00:ec2::254]/", "metadata"),
    ("http://metadata.google.internal/computeMetadata/v1/", "internal"),
    ("http://metadata/", "internal"),
    ("http://instance-data/latest/", "internal"),
    ("http://100.64.0.1/", "carrier-grade NAT"),
    ("http://224.0.0.1/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://[fe80::1]/", "link-local"),
    ("http://169.254.1.1/", "link-local"),
    ("http://[fc00::1]/", "private"),
    ("http://[fd12:3456::1]/", "private"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://[::ffff:10.0.0.1]/", "private"),
    ("http://[::127.0.0.1]/", "loopback"),
    ("http://[2002:7f00:1::]/", "loopback"),  # 6to4 of 127.0.0.1
    ("http://2130706433/", "loopback"),  # decimal
    ("http://0x7f000001/", "loopback"),  # hex
    ("http://0177.0.0.1/", "loopback"),  # octal
    ("http://0x7f.1/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://10.1/", "private"),
    ("http://3232235777/", "private"),  # 192.168.1.1 as decimal
    ("http://198.18.0.1/", "private"),  # benchmarking range
    ("http://240.0.0.1/", "private"),  # reserved
    ("http://[64:ff9b::a9fe:a9fe]/", "non-public"),  # NAT64 of the metadata address
    ("http://[2001:db8::1]/", "private"),  # documentation range
    ("ftp://example.com/", "only http and https"),
    ("file:///etc/passwd", "only http and https"),
    ("gopher://127.0.0.1:25/", "only http and https"),
    ("javascript:alert(1)", "only http and https"),
    ("http://user:pass@example.com/", "credentials"),
    ("http://user@example.com/", "credentials"),
    ("https://example.com:99999/", "malformed"),
    ("http:///path-only", "no host"),
    ("", "empty"),
    ("   ", "empty"),
    ("https://example.com/" + "a" * 2100, "2048"),
]


@pytest.mark.parametrize(("url", "reason"), HOSTILE, ids=[u[:60] or "empty" for u, _ in HOSTILE])
def test_hostile_urls_are_rejected_with_a_reason(url, reason, fake_dns):
    with pytest.raises(UnsafeWebhookUrl) as caught:
        validate_webhook_url(url)
    error = caught.value
    assert error.code == "unsafe_webhook_url"
    assert error.status_code == 400
    assert reason in error.details["reason"], error.details
    assert reason in error.message
    assert fake_dns.lookups == []  # decided without any name lookup


def test_a_name_resolving_to_loopback_is_rejected(fake_dns):
    fake_dns.set("evil.example", ["127.0.0.1"])
    with pytest.raises(UnsafeWebhookUrl) as caught:
        validate_webhook_url("https://evil.example/hook")
    assert "resolves to a loopback address (127.0.0.1)" in caught.value.details["reason"]
    assert fake_dns.lookups == ["evil.example"]


@pytest.mark.parametrize(
    ("addresses", "reason"),
    [
        ([PUBLIC_V4, "10.0.0.5"], "private address (10.0.0.5)"),
        (["10.0.0.5", PUBLIC_V4], "private address (10.0.0.5)"),
        ([PUBLIC_V6, "::1"], "loopback address (::1)"),
        ([PUBLIC_V4, "169.254.169.254"], "cloud metadata"),
        ([PUBLIC_V4, "::ffff:192.168.0.1"], "IPv4-mapped private"),
    ],
)
def test_a_name_resolving_to_public_and_private_addresses_is_rejected(addresses, reason, fake_dns):
    fake_dns.set("mixed.example", addresses)
    with pytest.raises(UnsafeWebhookUrl) as caught:
        validate_webhook_url("https://mixed.example/hook")
    assert reason in caught.value.details["reason"]


def test_a_name_that_does_not_resolve_is_rejected(fake_dns):
    fake_dns.set("nowhere.example", [])
    with pytest.raises(UnsafeWebhookUrl) as caught:
        validate_webhook_url("https://nowhere.example/hook")
    assert "does not resolve" in caught.value.details["reason"]


def test_a_public_address_is_accepted(fake_dns):
    fake_dns.set("hooks.example.com", [PUBLIC_V4, PUBLIC_V6])
    safe = validate_webhook_url("https://hooks.example.com/callbacks?x=1")
    assert safe.url == "https://hooks.example.com/callbacks?x=1"
    assert (safe.scheme, safe.host, safe.port) == ("https", "hooks.example.com", 443)
    assert safe.addresses == (PUBLIC_V4, PUBLIC_V6)
    assert safe.allowlisted is False
    assert validate_webhook_url("http://93.184.216.34:8080/x").addresses == (PUBLIC_V4,)
    assert validate_webhook_url(f"http://[{PUBLIC_V6}]/x").port == 80


# --- Allowlist --------------------------------------------------------------------------------------------


@pytest.fixture
def allowlist(settings, fake_dns):
    settings.WEBHOOK_ALLOWED_ORIGINS = ["https://hooks.partner.example", "http://127.0.0.1:8081"]
    fake_dns.set("hooks.partner.example", [PUBLIC_V4])
    fake_dns.set("hooks.example.com", [PUBLIC_V4])
    return settings.WEBHOOK_ALLOWED_ORIGINS


@pytest.mark.usefixtures("allowlist")
@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.partner.example/x",
        "https://hooks.partner.example:443/x?y=1",
        "HTTPS://HOOKS.PARTNER.EXAMPLE/x",
        "http://127.0.0.1:8081/hook",  # private, but an allowlisted trusted receiver
    ],
)
def test_allowlisted_origins_are_accepted(url):
    safe = validate_webhook_url(url)
    assert safe.allowlisted is True


@pytest.mark.usefixtures("allowlist")
@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/x",  # public, but not allowlisted
        "http://hooks.partner.example/x",  # scheme differs
        "https://hooks.partner.example:8443/x",  # port differs
        "https://evil.partner.example/x",
        "http://127.0.0.1:8082/hook",
        "http://127.0.0.1/hook",
        "https://127.0.0.1:8081/hook",
        "http://localhost:8081/hook",
        "http://[::1]:8081/hook",
        "http://2130706433:8081/hook",
    ],
)
def test_with_an_allowlist_other_origins_are_rejected(url):
    with pytest.raises(UnsafeWebhookUrl) as caught:
        validate_webhook_url(url)
    assert "WEBHOOK_ALLOWED_ORIGINS" in caught.value.details["reason"]


@pytest.mark.usefixtures("allowlist")
def test_with_an_allowlist_credentials_and_schemes_are_still_checked():
    with pytest.raises(UnsafeWebhookUrl, match="credentials"):
        validate_webhook_url("https://u:p@hooks.partner.example/x")
    with pytest.raises(UnsafeWebhookUrl, match="only http and https"):
        validate_webhook_url("ftp://hooks.partner.example/x")


# --- Nothing is sent to an unsafe destination ---------------------------------------------------------------


@pytest.fixture
def owner(make_role, make_user):
    return make_user(make_role("hook-owner", fiches=("rw", "ALL")), email="owner@example.com")


@pytest.mark.django_db
def test_an_unsafe_delivery_fails_with_the_reason_recorded_and_no_connection_is_made(owner, listener, settings):
    settings.WEBHOOK_ALLOWED_ORIGINS = []
    job = make_job(owner, webhook_url=f"http://127.0.0.1:{listener.port}/hook", webhook_secret="s3cret")
    delivery = send_job_webhook(job=job, event="fiches.progressive_fetch.progress")

    result = attempt_delivery(delivery_id=delivery.pk)

    assert (result.status, result.retry_in) == ("failed", None)
    delivery.refresh_from_db()
    assert delivery.status == "failed"
    assert delivery.attempts == 1
    assert "loopback" in delivery.last_error and delivery.last_status_code is None
    (attempt,) = WebhookDeliveryAttempt.objects.filter(delivery=delivery)
    assert attempt.error == delivery.last_error
    assert attempt.response_status is None
    job.refresh_from_db()
    assert job.webhook_attempts == 1
    assert job.webhook_last_error == delivery.last_error
    assert job.webhook_last_attempt_at is not None
    assert listener.connections == 0
    # Running it again does nothing: the delivery is failed.
    assert attempt_delivery(delivery_id=delivery.pk).status == "failed"
    assert WebhookDeliveryAttempt.objects.filter(delivery=delivery).count() == 1
    assert listener.connections == 0


@pytest.mark.django_db
def test_safe_at_request_time_unsafe_at_send_time_fails_without_connecting(owner, listener, fake_dns, settings):
    settings.WEBHOOK_ALLOWED_ORIGINS = []
    url = f"http://rebind.example:{listener.port}/hook"
    fake_dns.set("rebind.example", [PUBLIC_V4])
    assert validate_webhook_url(url).addresses == (PUBLIC_V4,)  # the request-time check passes

    job = make_job(owner, webhook_url=url)
    delivery = send_job_webhook(job=job, event="fiches.progressive_fetch.complete")
    fake_dns.set("rebind.example", ["127.0.0.1", "::1"])  # the name now points inside

    result = attempt_delivery(delivery_id=delivery.pk)

    assert (result.status, result.retry_in) == ("failed", None)
    delivery.refresh_from_db()
    assert "resolves to a loopback address (127.0.0.1)" in delivery.last_error
    assert WebhookDeliveryAttempt.objects.get(delivery=delivery).error == delivery.last_error
    assert listener.connections == 0


@pytest.mark.django_db
def test_a_rebind_between_the_check_and_the_connection_is_refused(owner, listener, fake_dns, settings):
    """The send-time check sees a public address, the next lookup (the connection's) a private one:
    the connection must use a checked address or check again, never the new private one."""
    settings.WEBHOOK_ALLOWED_ORIGINS = []
    answers = iter([[PUBLIC_V4]])
    fake_dns.set("rebind.example", lambda: next(answers, ["127.0.0.1"]))
    job = make_job(owner, webhook_url=f"http://rebind.example:{listener.port}/hook")
    delivery = send_job_webhook(job=job, event="fiches.progressive_fetch.progress")

    result = attempt_delivery(delivery_id=delivery.pk)

    assert result.status == "failed" and result.retry_in is None
    assert len(fake_dns.lookups) >= 2
    delivery.refresh_from_db()
    assert "InvalidIPAddress: 127.0.0.1" in delivery.last_error  # refused at connect time, not retried
    assert delivery.last_status_code is None
    assert listener.connections == 0
