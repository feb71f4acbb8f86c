"""Throttles: failed logins per account and client address, registrations per address.

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
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from app.errors import RateLimited

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from app.metrics import Metrics

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

    def __init__(self, redis: Redis | None, *, prefix: str, metrics: Metrics | None = None) -> None:
        self.redis = redis
        self.redis_up = metrics.redis_up if metrics is not None else None
        self.prefix = prefix
        self.local = _LocalCounters()
        self._hit = redis.register_script(_HIT) if redis is not None else None
        self._extend = redis.register_script(_EXTEND) if redis is not None else None

    def _redis_failed(self, exc: Exception) -> None:
        if self.redis_up is not None:
            self.redis_up.set(0)
        log.warning("redis unreachable, counting in this process: %s", exc)

    async def hit(self, key: str, window: float) -> tuple[int, float]:
        """Count one event under ``key``: (events in the current window, seconds it has left)."""
        key = f"{self.prefix}:{key}"
        if self._hit is not None:
            try:
                count, ttl_ms = await self._hit(keys=[key], args=[int(window * 1000)])
                return int(count), int(ttl_ms) / 1000
            except (RedisError, OSError) as exc:
                self._redis_failed(exc)
        return self.local.hit(key, window)

    async def extend(self, key: str, seconds: float) -> None:
        key = f"{self.prefix}:{key}"
        if self._extend is not None:
            try:
                await self._extend(keys=[key], args=[int(seconds * 1000)])
                return
            except (RedisError, OSError) as exc:
                self._redis_failed(exc)
        self.local.extend(key, seconds)

    async def clear(self, key: str) -> None:
        key = f"{self.prefix}:{key}"
        self.local.clear(key)
        if self.redis is not None:
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
