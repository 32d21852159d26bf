"""Per-user spending budgets (core.limits): a request may cost several units (a batch counts its
fiches), one that cannot fit the burst is refused outright, refused requests are refunded, each
kind reads its own settings and names itself in its 429, and Redis down fails closed. Redis only."""

from __future__ import annotations

import pytest

from accounts.models import User
from core.exceptions import ConflictError, DependencyUnavailable, InvalidInput, ThrottledError
from core.limits import RateLimiter, spend_limit, spending, throttle_crm_requests, throttle_spend


def a_user(pk: int) -> User:
    return User(pk=pk, email=f"u{pk}@example.com")  # never saved: the budgets only need its id


def test_a_call_may_cost_several_units_of_the_burst():
    limiter = RateLimiter("t-cost", rate="1/h", burst=5)
    assert limiter.try_acquire(3) == 0
    assert limiter.try_acquire(2) == 0
    wait = limiter.try_acquire(1)
    assert 3590 < wait <= 3600  # the burst is spent: the next unit frees in an hour


def test_a_refund_gives_the_units_back():
    limiter = RateLimiter("t-refund", rate="1/h", burst=2)
    assert limiter.try_acquire(2) == 0
    assert limiter.try_acquire(1) > 0
    limiter.refund(1)
    assert limiter.try_acquire(1) == 0
    assert limiter.try_acquire(1) > 0


def test_each_kind_reads_its_own_settings_and_names_itself(settings):
    settings.AUDIT_USER_RATE, settings.AUDIT_USER_BURST = "1/h", 1
    settings.CHAT_USER_RATE, settings.CHAT_USER_BURST = "2/m", 3
    assert spend_limit("chat") == ("2/m", 3)
    user = a_user(1)
    throttle_spend(user, "audit")
    with pytest.raises(ThrottledError) as info:
        throttle_spend(user, "audit")
    assert info.value.code == "audit_requests_throttled"
    assert 3590 <= info.value.retry_after <= 3600
    assert "audit" in info.value.message
    throttle_spend(a_user(2), "audit")  # another user, another budget
    throttle_spend(user, "chat")  # another kind, another budget
    with pytest.raises(ValueError, match="Unknown spending kind"):
        spend_limit("lunch")


def test_the_crm_throttle_keeps_its_code(settings):
    settings.CRM_USER_THROTTLE_RATE, settings.CRM_USER_THROTTLE_BURST = "1/h", 1
    user = a_user(3)
    throttle_crm_requests(user)
    with pytest.raises(ThrottledError) as info:
        throttle_crm_requests(user)
    assert info.value.code == "crm_requests_throttled"


def test_a_cost_above_the_burst_is_refused_without_counting(settings):
    settings.BATCH_USER_RATE, settings.BATCH_USER_BURST = "1/h", 3
    user = a_user(4)
    with pytest.raises(InvalidInput) as info:
        throttle_spend(user, "batch", cost=4)
    assert info.value.code == "batch_request_too_large"
    assert info.value.details == {"cost": 4, "burst": 3}
    throttle_spend(user, "batch", cost=3)  # nothing was counted by the refusal


def test_a_rate_off_never_throttles(settings):
    settings.RERUN_USER_RATE, settings.RERUN_USER_BURST = "off", 1
    for _ in range(20):
        throttle_spend(a_user(5), "rerun", cost=50)


def test_a_block_refused_with_a_domain_error_is_refunded_and_an_accepted_one_counts(settings):
    settings.TRANSCRIPTION_USER_RATE, settings.TRANSCRIPTION_USER_BURST = "1/h", 1
    user = a_user(6)
    for _ in range(3):
        with pytest.raises(ConflictError), spending(user, "transcription"):
            raise ConflictError("already running")
    with spending(user, "transcription"):
        pass
    with pytest.raises(ThrottledError), spending(user, "transcription"):
        pytest.fail("the block must not run over the budget")


def test_an_unexpected_error_still_counts(settings):
    settings.TRANSCRIPTION_USER_RATE, settings.TRANSCRIPTION_USER_BURST = "1/h", 1
    user = a_user(7)
    with pytest.raises(RuntimeError), spending(user, "transcription"):
        raise RuntimeError("bug")  # the work may have started: not refunded
    with pytest.raises(ThrottledError):
        throttle_spend(user, "transcription")


def test_redis_down_fails_closed(settings):
    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # nothing listens
    with pytest.raises(DependencyUnavailable) as info:
        throttle_spend(a_user(8), "audit")
    assert info.value.code == "rate_limiter_unavailable"
