"""Throttles: cost-based token buckets per caller, failed logins per account and client
address, registrations per address.

Counts live in Redis when it is configured (shared by every replica, each step one atomic
Lua script) and fall back to the process when Redis is unset or unreachable, so an outage
never turns a login into an error. A login holds a place *before* the password is checked:
concurrent guesses cannot slip past the limit between a check and an increment.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.infra.cache import UNAVAILABLE, Unavailable
from app.infra.errors import RateLimited, Unauthenticated

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from redis.commands.core import AsyncScript

    from app.infra.cache import RedisHealth
    from app.infra.settings import Settings

log = logging.getLogger(__name__)

# INCR the key; start its window on the first hit. Returns {count, ttl in ms}.
_HIT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {n, ttl}
"""


class _LocalCounters:
    """The in-process stand-in: bounded, oldest entries dropped first."""

    def __init__(self, maxsize: int = 100_000) -> None:
        self.maxsize = maxsize
        self._entries: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def hit(self, key: str, window: float) -> tuple[int, float]:
        now = time.monotonic()
        count, ends = self._entries.get(key, (0, 0.0))
        if ends <= now:
            count, ends = 0, now + window
        self._entries[key] = (count + 1, ends)
        self._entries.move_to_end(key)
        while len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)
        return count + 1, ends - now


class Counters:
    """Windowed counters, in Redis when it answers, in the process otherwise; the scripts of
    the throttles below run through :meth:`run`, so that Redis degrades in one place."""

    def __init__(self, health: RedisHealth | None, *, prefix: str) -> None:
        self.health = health
        redis = health.redis if health is not None else None
        self.redis = redis
        self.prefix = prefix
        self.local = _LocalCounters()
        self._hit = redis.register_script(_HIT) if redis is not None else None

    async def run(self, script: AsyncScript | None, keys: list[str], args: list[Any]) -> Any:
        """The script's answer, or ``UNAVAILABLE`` (Redis unset, down or failing)."""
        if script is None or self.health is None:
            return UNAVAILABLE
        return await self.health.run(lambda _: script(keys=keys, args=args))

    async def hit(self, key: str, window: float) -> tuple[int, float]:
        """Count one event under ``key``: (events in the current window, seconds it has left)."""
        key = f"{self.prefix}:{key}"
        found = await self.run(self._hit, [key], [int(window * 1000)])
        if isinstance(found, Unavailable):
            return self.local.hit(key, window)
        count, ttl_ms = found
        return int(count), int(ttl_ms) / 1000


def _digest(*parts: str) -> str:
    # hashed: the key space of a shared Redis should not list users' addresses or emails
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def _refuse(message: str, seconds: float) -> RateLimited:
    wait = int(seconds) + 1
    return RateLimited(f"{message}: try again in {wait} s", retryAfterSeconds=wait, retryAfter=wait)


# Login attempts, per key a hash {f: failures settled, p: checks in flight}, in one atomic
# step each. KEYS: the (account, address) pair, the address. ARGV: attempts per pair, per
# address, window ms, longest back-off ms. Returns {verdict, ms}: 0 go (a place is held),
# 1 the pair is locked for ms, 2 the address is, 3 busy (every free place is in flight).
_RESERVE = """
local attempts, per_address = tonumber(ARGV[1]), tonumber(ARGV[2])
local window, longest = tonumber(ARGV[3]), tonumber(ARGV[4])
local pf = tonumber(redis.call('HGET', KEYS[1], 'f') or '0')
local pp = tonumber(redis.call('HGET', KEYS[1], 'p') or '0')
local af = tonumber(redis.call('HGET', KEYS[2], 'f') or '0')
local ap = tonumber(redis.call('HGET', KEYS[2], 'p') or '0')
if pf >= attempts then
  local n = redis.call('HINCRBY', KEYS[1], 'f', 1)
  local backoff = math.min(window * 2 ^ (n - attempts - 1), longest)
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < backoff then redis.call('PEXPIRE', KEYS[1], math.floor(backoff)); ttl = backoff end
  return {1, math.floor(ttl)}
end
if af >= per_address then return {2, redis.call('PTTL', KEYS[2])} end
if pf + pp >= attempts or af + ap >= per_address then return {3, 0} end
for i = 1, 2 do
  redis.call('HINCRBY', KEYS[i], 'p', 1)
  if redis.call('PTTL', KEYS[i]) < 0 then redis.call('PEXPIRE', KEYS[i], window) end
end
return {0, 0}
"""
# The check held by _RESERVE is over. ARGV: 1 it failed (a failure counted on both keys),
# 0 it succeeded (the pair's failures are forgotten), window ms.
_SETTLE = """
for i = 1, 2 do
  if tonumber(redis.call('HGET', KEYS[i], 'p') or '0') > 0 then redis.call('HINCRBY', KEYS[i], 'p', -1) end
end
if ARGV[1] == '1' then
  for i = 1, 2 do
    redis.call('HINCRBY', KEYS[i], 'f', 1)
    if redis.call('PTTL', KEYS[i]) < 0 then redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
  end
else
  redis.call('HDEL', KEYS[1], 'f')
end
return 0
"""


class _LocalAttempts:
    """The in-process stand-in for _RESERVE and _SETTLE: bounded, oldest keys dropped first."""

    def __init__(self, maxsize: int = 100_000) -> None:
        self.maxsize = maxsize
        self._keys: OrderedDict[str, list[float]] = OrderedDict()  # key -> [failures, in flight, ends]

    def _get(self, key: str, window: float) -> list[float]:
        now = time.monotonic()
        entry = self._keys.get(key)
        if entry is None or entry[2] <= now:
            entry = self._keys[key] = [0, 0, now + window]
        self._keys.move_to_end(key)
        while len(self._keys) > self.maxsize:
            self._keys.popitem(last=False)
        return entry

    def reserve(
        self, pair: str, addr: str, attempts: int, per_address: int, window: float, longest: float
    ) -> tuple[int, float]:
        p, a = self._get(pair, window), self._get(addr, window)
        now = time.monotonic()
        if p[0] >= attempts:
            p[0] += 1
            p[2] = max(p[2], now + min(window * 2 ** (p[0] - attempts - 1), longest))
            return 1, p[2] - now
        if a[0] >= per_address:
            return 2, a[2] - now
        if p[0] + p[1] >= attempts or a[0] + a[1] >= per_address:
            return 3, 0.0
        p[1] += 1
        a[1] += 1
        return 0, 0.0

    def settle(self, pair: str, addr: str, failed: bool, window: float) -> None:
        p, a = self._get(pair, window), self._get(addr, window)
        p[1], a[1] = max(p[1] - 1, 0), max(a[1] - 1, 0)
        if failed:
            p[0] += 1
            a[0] += 1
        else:
            p[0] = 0


class LoginThrottle:
    """Failed logins are counted, per (account, client address) and per address; a successful
    login counts nothing (and forgets the pair's failures).

    Past ``attempts`` failures in ``window`` seconds, that account is refused *from that
    address* only, and every further try doubles the wait (up to ``max_backoff``): a stranger
    cannot lock the owner out from elsewhere. ``per_address`` bounds one address's failures
    across all accounts (credential stuffing).

    A check in flight holds a place until it is settled, so concurrent guesses cannot slip
    past the limit; a login that finds every free place in flight waits for them (one password
    check, about 150 ms) instead of being refused, so eight devices logging in at once all
    get in. Counts live in Redis (one atomic script per step), in the process while it is down.
    """

    def __init__(
        self,
        counters: Counters,
        *,
        attempts: int,
        window_seconds: float,
        per_address: int,
        max_backoff_seconds: float = 3600.0,
        max_wait_seconds: float = 5.0,
    ) -> None:
        self.counters = counters
        self.attempts = attempts
        self.window = window_seconds
        self.per_address = per_address
        self.max_backoff = max_backoff_seconds
        self.max_wait = max_wait_seconds
        self.local = _LocalAttempts()
        redis = counters.redis
        self._reserve = redis.register_script(_RESERVE) if redis is not None else None
        self._settle = redis.register_script(_SETTLE) if redis is not None else None

    def _keys(self, email: str, address: str) -> tuple[str, str]:
        email = email.strip().lower()
        prefix = self.counters.prefix
        return f"{prefix}:login:pair:{_digest(email, address)}", f"{prefix}:login:addr:{_digest(address)}"

    async def _try(self, pair: str, addr: str) -> tuple[int, float]:
        args = [self.attempts, self.per_address, int(self.window * 1000), int(self.max_backoff * 1000)]
        found = await self.counters.run(self._reserve, [pair, addr], args)
        if isinstance(found, Unavailable):
            return self.local.reserve(
                pair, addr, self.attempts, self.per_address, self.window, self.max_backoff
            )
        verdict, ms = found
        return int(verdict), int(ms) / 1000

    async def _done(self, pair: str, addr: str, failed: bool) -> None:
        found = await self.counters.run(self._settle, [pair, addr], [int(failed), int(self.window * 1000)])
        if isinstance(found, Unavailable):
            self.local.settle(pair, addr, failed, self.window)

    @contextlib.asynccontextmanager
    async def attempt(self, email: str, address: str) -> AsyncIterator[None]:
        """Hold a place for one password check; RATE_LIMITED if the pair or the address is
        over its limit. The block's :class:`Unauthenticated` counts as a failure."""
        pair, addr = self._keys(email, address)
        deadline = time.monotonic() + self.max_wait
        pause = 0.02
        while True:
            verdict, seconds = await self._try(pair, addr)
            if verdict == 0:
                break
            if verdict == 1:
                raise _refuse("too many failed logins for this account from your address", seconds)
            if verdict == 2:
                raise _refuse("too many failed logins from your address", seconds)
            if time.monotonic() >= deadline:
                raise _refuse("too many logins in progress for this account", 0)
            await asyncio.sleep(pause)  # the checks in flight settle within one password hash
            pause = min(pause * 2, 0.2)
        failed = False
        try:
            yield
        except Unauthenticated:
            failed = True
            raise
        finally:
            await self._done(pair, addr, failed)


class RegisterThrottle:
    """At most ``per_window`` new accounts per client address per window."""

    def __init__(self, counters: Counters, *, per_window: int, window_seconds: float) -> None:
        self.counters = counters
        self.per_window = per_window
        self.window = window_seconds

    async def attempt(self, address: str) -> None:
        count, left = await self.counters.hit("register:" + _digest(address), self.window)
        if count > self.per_window:
            raise _refuse("too many registrations from your address", left)


# A token bucket in one atomic step, on Redis's own clock (replicas' clocks never disagree).
# KEYS[1] bucket; ARGV capacity, refill per second, cost. Returns {allowed, tokens left
# (x1000), wait in ms}.
_BUCKET = """
local capacity, rate, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or capacity
local ts = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate / 1000)
local allowed = 0
local wait = 0
if cost <= tokens then
  tokens = tokens - cost
  allowed = 1
else
  wait = math.ceil((cost - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity * 1000 / rate) + 1000)
return {allowed, math.floor(tokens * 1000), wait}
"""


@dataclass(frozen=True)
class Budget:
    """One bucket's answer: whether the cost was taken, what is left, when it is full again."""

    allowed: bool
    capacity: float
    remaining: float
    restore_per_second: float
    retry_after: float  # seconds until the cost would fit (0 when allowed)

    @property
    def full_in(self) -> float:
        return (self.capacity - self.remaining) / self.restore_per_second


class TokenBuckets:
    """Cost-based rate limits: a bucket per caller that refills at a steady rate, shared by
    every replica through Redis (atomic Lua), in the process while Redis is unset or down."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        redis = counters.redis
        self._script = redis.register_script(_BUCKET) if redis is not None else None
        self._local: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, monotonic ts)
        # keys whose bucket is empty, until it holds a point again: refused before any work
        self._empty: OrderedDict[str, float] = OrderedDict()

    def empty_for(self, key: str) -> float:
        """Seconds until ``key``'s bucket holds a point again (0: it may have one now). Known
        from this replica's last refusal, so a flood is refused without parsing its queries."""
        until = self._empty.get(key)
        if until is None:
            return 0.0
        left = until - time.monotonic()
        if left <= 0:
            self._empty.pop(key, None)
            return 0.0
        return left

    def _note(self, key: str, budget: Budget) -> None:
        if not budget.allowed and budget.remaining < 1:
            self._empty[key] = time.monotonic() + (1 - budget.remaining) / budget.restore_per_second
            self._empty.move_to_end(key)
            while len(self._empty) > self.counters.local.maxsize:
                self._empty.popitem(last=False)

    def _take_local(self, key: str, capacity: float, rate: float, cost: float) -> Budget:
        now = time.monotonic()
        tokens, ts = self._local.get(key, (capacity, now))
        tokens = min(capacity, tokens + (now - ts) * rate)
        allowed = cost <= tokens
        if allowed:
            tokens -= cost
        self._local[key] = (tokens, now)
        self._local.move_to_end(key)
        while len(self._local) > self.counters.local.maxsize:
            self._local.popitem(last=False)
        wait = 0.0 if allowed else (cost - tokens) / rate
        return Budget(allowed, capacity, tokens, rate, wait)

    async def take(self, key: str, cost: float, *, capacity: float, per_second: float) -> Budget:
        budget = await self._take(f"{self.counters.prefix}:bucket:{key}", cost, capacity, per_second)
        self._note(key, budget)
        return budget

    async def _take(self, key: str, cost: float, capacity: float, per_second: float) -> Budget:
        found = await self.counters.run(self._script, [key], [capacity, per_second, cost])
        if isinstance(found, Unavailable):
            return self._take_local(key, capacity, per_second, cost)
        allowed, left, wait_ms = found
        return Budget(bool(allowed), capacity, int(left) / 1000, per_second, int(wait_ms) / 1000)


class RateLimiter:
    """The one place an operation's cost is taken from its caller's bucket (a user's, or a
    client address's when anonymous), with the bucket sizes of the caller's role."""

    def __init__(self, settings: Settings, buckets: TokenBuckets) -> None:
        self.settings = settings
        self.buckets = buckets

    @property
    def enabled(self) -> bool:
        return self.settings.rate_limits

    def empty_for(self, key: str) -> float:
        """Seconds until ``key``'s bucket holds a point again, as this replica last saw it (0:
        it may hold one): a flood is refused before its query is read."""
        return self.buckets.empty_for(key) if self.enabled else 0.0

    async def take(self, key: str, role: str | None, cost: int) -> Budget | None:
        """Take ``cost`` points (None: limits are off)."""
        if not self.enabled:
            return None
        capacity, per_second = self.settings.rate_limit(role)
        return await self.buckets.take(key, cost, capacity=capacity, per_second=per_second)
