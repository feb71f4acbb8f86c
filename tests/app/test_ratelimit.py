"""The throttles' rules, counted in the process (Redis unset); the Redis path runs in e2e tests."""

from __future__ import annotations

import asyncio

import pytest

from app.infra.errors import RateLimited, Unauthenticated
from app.infra.throttles import Counters, LoginThrottle, RegisterThrottle


def _throttle(attempts: int = 2, per_address: int = 10) -> LoginThrottle:
    return LoginThrottle(
        Counters(None, prefix="t"), attempts=attempts, window_seconds=60, per_address=per_address
    )


async def _fail(throttle: LoginThrottle, email: str, address: str) -> None:
    with pytest.raises(Unauthenticated):
        async with throttle.attempt(email, address):
            raise Unauthenticated("invalid email or password")


async def _succeed(throttle: LoginThrottle, email: str, address: str) -> None:
    async with throttle.attempt(email, address):
        pass


async def test_a_pair_is_refused_past_its_failures_however_the_email_is_typed() -> None:
    throttle = _throttle()
    await _fail(throttle, "a@b.io", "10.0.0.1")
    await _fail(throttle, "A@b.io ", "10.0.0.1")  # the same account
    with pytest.raises(RateLimited):
        await _succeed(throttle, "a@b.io", "10.0.0.1")


async def test_successful_logins_count_nothing() -> None:
    throttle = _throttle(attempts=2, per_address=3)
    for _ in range(20):
        await _succeed(throttle, "a@b.io", "10.0.0.1")
    await _fail(throttle, "a@b.io", "10.0.0.1")
    await _succeed(throttle, "a@b.io", "10.0.0.1")  # and forget the pair's failures
    await _fail(throttle, "a@b.io", "10.0.0.1")
    await _fail(throttle, "a@b.io", "10.0.0.1")
    with pytest.raises(RateLimited):
        await _succeed(throttle, "a@b.io", "10.0.0.1")


async def test_the_owner_elsewhere_is_not_locked_out() -> None:
    throttle = _throttle()
    for _ in range(2):
        await _fail(throttle, "a@b.io", "10.0.0.1")
    with pytest.raises(RateLimited):
        await _succeed(throttle, "a@b.io", "10.0.0.1")
    await _succeed(throttle, "a@b.io", "10.0.0.2")  # another address: its own count


async def test_each_refusal_doubles_the_wait() -> None:
    throttle = _throttle(attempts=1)
    await _fail(throttle, "a@b.io", "10.0.0.1")
    waits = []
    for _ in range(3):
        with pytest.raises(RateLimited) as refused:
            await _succeed(throttle, "a@b.io", "10.0.0.1")
        waits.append(refused.value.extensions["retryAfter"])
    assert waits[0] < waits[1] < waits[2]


async def test_one_address_failing_across_many_accounts_is_refused() -> None:
    throttle = _throttle(attempts=5, per_address=3)
    for i in range(3):
        await _fail(throttle, f"user{i}@b.io", "10.0.0.1")
    with pytest.raises(RateLimited, match="from your address"):
        await _succeed(throttle, "user9@b.io", "10.0.0.1")


async def test_concurrent_right_logins_wait_for_each_other_instead_of_failing() -> None:
    throttle = _throttle(attempts=2)
    inside = 0
    most = 0
    full, release = asyncio.Event(), asyncio.Event()

    async def login() -> None:
        nonlocal inside, most
        async with throttle.attempt("a@b.io", "10.0.0.1"):
            inside += 1
            most = max(most, inside)
            if inside == 2:
                full.set()
            await release.wait()
            inside -= 1

    logins = [asyncio.create_task(login()) for _ in range(8)]
    await full.wait()  # the two free places are taken; the other six wait for them
    release.set()
    await asyncio.gather(*logins)
    assert most == 2  # never more checks in flight than places


async def test_concurrent_wrong_guesses_cannot_slip_past_the_limit() -> None:
    throttle = _throttle(attempts=3)

    async def guess() -> str:
        try:
            async with throttle.attempt("a@b.io", "10.0.0.1"):
                await asyncio.sleep(0.01)  # a password check takes time
                raise Unauthenticated("invalid email or password")
        except Unauthenticated:
            return "UNAUTHENTICATED"
        except RateLimited:
            return "RATE_LIMITED"

    codes = await asyncio.gather(*(guess() for _ in range(10)))
    assert codes.count("UNAUTHENTICATED") == 3 and codes.count("RATE_LIMITED") == 7


async def test_registrations_per_address() -> None:
    throttle = RegisterThrottle(Counters(None, prefix="t"), per_window=2, window_seconds=60)
    await throttle.attempt("10.0.0.1")
    await throttle.attempt("10.0.0.1")
    with pytest.raises(RateLimited):
        await throttle.attempt("10.0.0.1")
    await throttle.attempt("10.0.0.2")
