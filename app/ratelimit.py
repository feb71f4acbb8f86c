"""Throttles: cost-based token buckets per caller, failed logins per account and client
address, registrations per address.

Counts live in Redis when it is configured (shared by every replica, each step one atomic
Lua script) and fall back to the process when Redis is unset or unreachable, so an outage
never turns a login into an error. The attempt is counted *before* the password is checked:
concurrent guesses cannot slip past the limit between a check and an increment.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from app.errors import RateLimited

if TYPE_CHECKING:
    from app.cache import RedisHealth

log = logging.getLogger(__name__)

# INCR the key; start its window on the first hit. Returns {count, ttl in ms}.
_HIT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {n, ttl}
"""
# Lengthen a key's life to at least ARGV[1] ms (back-off), never shorten it.
_EXTEND = """
local ttl = redis.call('PTTL', KEYS[1])
if ttl >= 0 and ttl < tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return ttl
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

    def extend(self, key: str, seconds: float) -> None:
        if key in self._entries:
            count, ends = self._entries[key]
            self._entries[key] = (count, max(ends, time.monotonic() + seconds))

    def clear(self, key: str) -> None:
        self._entries.pop(key, None)


class Counters:
    """Windowed counters, in Redis when it answers, in the process otherwise."""

    def __init__(self, health: RedisHealth | None, *, prefix: str) -> None:
        self.health = health
        redis = health.redis if health is not None else None
        self.redis = redis
        self.prefix = prefix
        self.local = _LocalCounters()
        self._hit = redis.register_script(_HIT) if redis is not None else None
        self._extend = redis.register_script(_EXTEND) if redis is not None else None

    def usable(self) -> bool:
        return self.health is not None and self.health.usable() is not None

    def _redis_failed(self, exc: Exception) -> None:
        if self.health is not None:
            self.health.failed(exc)

    async def hit(self, key: str, window: float) -> tuple[int, float]:
        """Count one event under ``key``: (events in the current window, seconds it has left)."""
        key = f"{self.prefix}:{key}"
        if self._hit is not None and self.usable():
            try:
                count, ttl_ms = await self._hit(keys=[key], args=[int(window * 1000)])
                return int(count), int(ttl_ms) / 1000
            except (RedisError, OSError) as exc:
                self._redis_failed(exc)
        return self.local.hit(key, window)

    async def extend(self, key: str, seconds: float) -> None:
        key = f"{self.prefix}:{key}"
        if self._extend is not None and self.usable():
            try:
                await self._extend(keys=[key], args=[int(seconds * 1000)])
                return
            except (RedisError, OSError) as exc:
                self._redis_failed(exc)
        self.local.extend(key, seconds)

    async def clear(self, key: str) -> None:
        key = f"{self.prefix}:{key}"
        self.local.clear(key)
        if self.redis is not None and self.usable():
            try:
                await self.redis.delete(key)
            except (RedisError, OSError) as exc:
                self._redis_failed(exc)


def _digest(*parts: str) -> str:
    # hashed: the key space of a shared Redis should not list users' addresses or emails
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def _refuse(message: str, seconds: float) -> RateLimited:
    wait = int(seconds) + 1
    return RateLimited(f"{message}: try again in {wait} s", retryAfterSeconds=wait, retryAfter=wait)


class LoginThrottle:
    """Wrong passwords are counted per (account, client address) and per address.

    Past ``attempts`` in ``window`` seconds, that account is refused *from that address*
    only, and every further try doubles the wait (up to ``max_backoff``): a stranger cannot
    lock the owner out from elsewhere. ``per_address`` bounds one address's tries across
    all accounts (credential stuffing).
    """

    def __init__(
        self,
        counters: Counters,
        *,
        attempts: int,
        window_seconds: float,
        per_address: int,
        max_backoff_seconds: float = 3600.0,
    ) -> None:
        self.counters = counters
        self.attempts = attempts
        self.window = window_seconds
        self.per_address = per_address
        self.max_backoff = max_backoff_seconds

    @staticmethod
    def _keys(email: str, address: str) -> tuple[str, str]:
        email = email.strip().lower()
        return (
            "login:pair:" + _digest(email, address),
            "login:addr:" + _digest(address),
        )

    async def attempt(self, email: str, address: str) -> None:
        """Count this attempt; RATE_LIMITED if the pair or the address is over its limit."""
        pair, addr = self._keys(email, address)
        count, left = await self.counters.hit(pair, self.window)
        if count > self.attempts:
            backoff = min(self.window * 2 ** (count - self.attempts - 1), self.max_backoff)
            await self.counters.extend(pair, backoff)
            raise _refuse("too many failed logins for this account from your address", max(left, backoff))
        count, left = await self.counters.hit(addr, self.window)
        if count > self.per_address:
            raise _refuse("too many login attempts from your address", left)

    async def succeeded(self, email: str, address: str) -> None:
        await self.counters.clear(self._keys(email, address)[0])


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
        if self._script is not None and self.counters.usable():
            try:
                allowed, left, wait_ms = await self._script(keys=[key], args=[capacity, per_second, cost])
                return Budget(bool(allowed), capacity, int(left) / 1000, per_second, int(wait_ms) / 1000)
            except (RedisError, OSError) as exc:
                self.counters._redis_failed(exc)
        return self._take_local(key, capacity, per_second, cost)
