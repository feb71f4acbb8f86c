"""The throttles' rules, counted in the process (Redis unset); the Redis path runs in e2e tests."""

from __future__ import annotations

import pytest

from app.errors import RateLimited
from app.ratelimit import Counters, LoginThrottle, RegisterThrottle


def _throttle(attempts: int = 2, per_address: int = 10) -> LoginThrottle:
    return LoginThrottle(
        Counters(None, prefix="t"), attempts=attempts, window_seconds=60, per_address=per_address
    )


async def test_a_pair_is_refused_past_its_attempts_however_the_email_is_typed() -> None:
    throttle = _throttle()
    await throttle.attempt("a@b.io", "10.0.0.1")
    await throttle.attempt("A@b.io ", "10.0.0.1")  # the same account
    with pytest.raises(RateLimited):
        await throttle.attempt("a@b.io", "10.0.0.1")


async def test_the_owner_elsewhere_is_not_locked_out() -> None:
    throttle = _throttle()
    for _ in range(2):
        await throttle.attempt("a@b.io", "10.0.0.1")
    with pytest.raises(RateLimited):
        await throttle.attempt("a@b.io", "10.0.0.1")
    await throttle.attempt("a@b.io", "10.0.0.2")  # another address: its own count


async def test_each_refusal_doubles_the_wait() -> None:
    throttle = _throttle(attempts=1)
    await throttle.attempt("a@b.io", "10.0.0.1")
    waits = []
    for _ in range(3):
        with pytest.raises(RateLimited) as refused:
            await throttle.attempt("a@b.io", "10.0.0.1")
        waits.append(refused.value.extensions["retryAfter"])
    assert waits[0] < waits[1] < waits[2]


async def test_success_clears_the_pair() -> None:
    throttle = _throttle()
    await throttle.attempt("a@b.io", "10.0.0.1")
    await throttle.succeeded("a@b.io", "10.0.0.1")
    await throttle.attempt("a@b.io", "10.0.0.1")
    await throttle.attempt("a@b.io", "10.0.0.1")


async def test_one_address_across_many_accounts_is_refused() -> None:
    throttle = _throttle(attempts=5, per_address=3)
    for i in range(3):
        await throttle.attempt(f"user{i}@b.io", "10.0.0.1")
    with pytest.raises(RateLimited, match="from your address"):
        await throttle.attempt("user9@b.io", "10.0.0.1")


async def test_registrations_per_address() -> None:
    throttle = RegisterThrottle(Counters(None, prefix="t"), per_window=2, window_seconds=60)
    await throttle.attempt("10.0.0.1")
    await throttle.attempt("10.0.0.1")
    with pytest.raises(RateLimited):
        await throttle.attempt("10.0.0.1")
    await throttle.attempt("10.0.0.2")
