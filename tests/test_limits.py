"""Global limits and locks held in Redis (core.limits, core.locks): rate parsing, the GCRA rate
limiter (spacing, waiting, a budget shared across instances and threads), the lease-based
semaphore and the Redis lock (fail fast, wait, expiry / takeover). Redis only, no database."""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack

import pytest

from core.limits import LimitBusy, RateLimiter, Semaphore, parse_rate
from core.locks import LockNotAcquired, redis_lock
from core.redis import get_redis

# --- parse_rate ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "interval"),
    [("20/m", 3.0), ("5/s", 0.2), ("10/s", 0.1), ("120/h", 30.0), ("2/min", 30.0), (" 4/S ", 0.25), ("4", 0.25)],
)
def test_parse_rate_gives_seconds_between_calls(rate, interval):
    assert parse_rate(rate) == pytest.approx(interval)


@pytest.mark.parametrize("rate", ["off", "OFF", "", "0", "none", None, "0/s"])
def test_parse_rate_off_means_no_limit(rate):
    assert parse_rate(rate) is None


@pytest.mark.parametrize("rate", ["abc", "20/d", "20/fortnight", "x/m", "/m", "20/m/s"])
def test_parse_rate_rejects_invalid_rates(rate):
    with pytest.raises(ValueError, match="Invalid rate"):
        parse_rate(rate)


# --- RateLimiter ---------------------------------------------------------------------------------


def test_rate_limiter_spaces_calls():
    limiter = RateLimiter("t-spacing", rate="10/s")
    assert limiter.try_acquire() == 0
    wait = limiter.try_acquire()
    assert 0.05 < wait <= 0.1 + 1e-6


def test_rate_limiter_off_never_waits():
    limiter = RateLimiter("t-off", rate="off")
    assert [limiter.try_acquire() for _ in range(50)] == [0.0] * 50
    assert not get_redis().exists("limit:t-off")


def test_rate_limiter_acquire_waits_when_allowed():
    limiter = RateLimiter("t-wait", rate="10/s")
    limiter.acquire(max_wait=0)
    started = time.monotonic()
    limiter.acquire(max_wait=1.0)
    elapsed = time.monotonic() - started
    assert 0.07 <= elapsed < 0.5


def test_rate_limiter_acquire_raises_limit_busy_when_the_wait_is_too_long():
    limiter = RateLimiter("t-busy", rate="10/s")
    limiter.acquire(max_wait=0)
    started = time.monotonic()
    with pytest.raises(LimitBusy) as info:
        limiter.acquire(max_wait=0.02)
    assert time.monotonic() - started < 0.05  # raised at once, not after waiting
    assert 0.05 < info.value.retry_after <= 0.1 + 1e-6
    assert "limit:t-busy" in str(info.value)


def test_rate_limiters_with_the_same_name_share_the_budget():
    first, second = RateLimiter("t-shared", rate="10/s"), RateLimiter("t-shared", rate="10/s")
    other = RateLimiter("t-other", rate="10/s")
    assert first.try_acquire() == 0
    assert second.try_acquire() > 0
    assert other.try_acquire() == 0  # another name, another budget


def test_rate_limiter_budget_is_shared_across_threads():
    """4 threads x 5 acquisitions at 50/s (one call per 20 ms): 20 calls take >= 19 intervals and
    are spaced: no 20 ms window holds more than 2 of them."""
    stamps: list[float] = []
    stamps_lock = threading.Lock()
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def worker():
        limiter = RateLimiter("t-threads", rate="50/s")  # one instance per thread, same name
        try:
            barrier.wait()
            for _ in range(5):
                limiter.acquire(max_wait=5)
                with stamps_lock:
                    stamps.append(time.monotonic())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    total = time.monotonic() - started

    assert not errors
    assert len(stamps) == 20
    assert total >= 0.37
    stamps.sort()
    assert stamps[-1] - stamps[0] >= 0.36
    densest = max(sum(1 for t in stamps if s <= t < s + 0.02) for s in stamps)
    assert densest <= 2


# --- Semaphore -----------------------------------------------------------------------------------


def test_semaphore_refuses_a_third_holder_and_release_frees_a_slot():
    sem = Semaphore("t-sem", limit=2, lease_seconds=30)
    assert sem.acquire("a") and sem.acquire("b")
    assert not sem.acquire("c")
    assert sorted(sem.holders()) == ["a", "b"]
    assert sem.acquire("a")  # a holder re-acquiring (lease renewal) does not take a second slot
    assert not sem.acquire("c")
    sem.release("a")
    assert sorted(sem.holders()) == ["b"]
    assert sem.acquire("c")
    assert sorted(sem.holders()) == ["b", "c"]


def test_semaphores_with_the_same_name_share_slots():
    assert Semaphore("t-shared-sem", limit=1, lease_seconds=30).acquire("a")
    assert not Semaphore("t-shared-sem", limit=1, lease_seconds=30).acquire("b")
    assert Semaphore("t-other-sem", limit=1, lease_seconds=30).acquire("b")


def test_semaphore_expired_leases_free_their_slots():
    sem = Semaphore("t-lease", limit=2, lease_seconds=0.2)
    assert sem.acquire("crashed-1") and sem.acquire("crashed-2")
    assert not sem.acquire("c")
    time.sleep(0.25)
    assert sem.holders() == []
    assert sem.acquire("c")
    assert sem.holders() == ["c"]


def test_semaphore_slot_holds_for_the_block_and_releases():
    sem = Semaphore("t-slot", limit=1, lease_seconds=30)
    with sem.slot("a", wait=0.1):
        assert sem.holders() == ["a"]
    assert sem.holders() == []
    with pytest.raises(RuntimeError), sem.slot("b", wait=0.1):
        raise RuntimeError("boom")
    assert sem.holders() == []  # released on error too


def test_semaphore_slot_raises_limit_busy_when_no_slot_frees_within_wait():
    sem = Semaphore("t-busy-slot", limit=1, lease_seconds=30)
    assert sem.acquire("holder")
    started = time.monotonic()
    with pytest.raises(LimitBusy), sem.slot("waiter", wait=0.15):
        pytest.fail("must not enter the block")
    assert 0.14 <= time.monotonic() - started < 1.0
    assert sem.holders() == ["holder"]


def test_semaphore_slot_waits_for_a_slot_freed_in_time():
    sem = Semaphore("t-wait-slot", limit=1, lease_seconds=30)
    assert sem.acquire("holder")
    timer = threading.Timer(0.1, sem.release, args=["holder"])
    timer.start()
    try:
        with sem.slot("waiter", wait=2.0):
            assert sem.holders() == ["waiter"]
    finally:
        timer.join()


# --- redis_lock ----------------------------------------------------------------------------------


def test_redis_lock_second_acquisition_fails_immediately():
    with redis_lock("t-lock", timeout=10):
        started = time.monotonic()
        with pytest.raises(LockNotAcquired), redis_lock("t-lock", timeout=10):
            pytest.fail("must not enter the block")
        assert time.monotonic() - started < 0.05
        with redis_lock("t-lock-other", timeout=10):  # another name is free
            pass
    with redis_lock("t-lock", timeout=10):  # released on exit
        pass


def test_redis_lock_wait_blocks_until_the_holder_releases():
    held, release = threading.Event(), threading.Event()

    def holder():
        with redis_lock("t-lock-wait", timeout=10):
            held.set()
            release.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(5)
        threading.Timer(0.2, release.set).start()
        started = time.monotonic()
        with redis_lock("t-lock-wait", timeout=10, wait=3):
            elapsed = time.monotonic() - started
        assert 0.15 <= elapsed < 2.0
    finally:
        release.set()
        thread.join(5)


def test_redis_lock_wait_gives_up_after_wait():
    with redis_lock("t-lock-giveup", timeout=10):
        started = time.monotonic()
        with pytest.raises(LockNotAcquired), redis_lock("t-lock-giveup", timeout=10, wait=0.15):
            pass
        assert 0.1 <= time.monotonic() - started < 1.0


def test_redis_lock_expired_lock_can_be_taken_and_the_old_holder_does_not_release_it():
    newcomer = ExitStack()
    try:
        with redis_lock("t-lock-expiry", timeout=0.2):
            time.sleep(0.3)  # the first holder outlives its timeout: the lock is gone
            newcomer.enter_context(redis_lock("t-lock-expiry", timeout=10))
        # the first holder's release (on exit) must not have released the newcomer's lock
        assert get_redis().exists("lock:t-lock-expiry")
        with pytest.raises(LockNotAcquired), redis_lock("t-lock-expiry", timeout=10):
            pass
    finally:
        newcomer.close()
    with redis_lock("t-lock-expiry", timeout=10):
        pass
