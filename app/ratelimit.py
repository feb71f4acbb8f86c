"""Failed-login throttling: RATE_LIMITED after too many wrong passwords for one email.

Counts live in Redis when it is configured (shared by every replica), otherwise in the
process. A successful login clears the count.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING

from app.errors import RateLimited

if TYPE_CHECKING:
    from redis.asyncio import Redis


class LoginLimiter:
    def __init__(self, redis: Redis | None, *, attempts: int, window_seconds: int) -> None:
        self.redis = redis
        self.attempts = attempts
        self.window = window_seconds
        self._local: dict[str, tuple[int, float]] = {}

    @staticmethod
    def _key(email: str) -> str:
        # hashed: the key space of a shared Redis should not list users' addresses
        return "cinerec:login-failures:" + hashlib.sha256(email.strip().lower().encode()).hexdigest()

    async def _count(self, key: str) -> tuple[int, float]:
        """(failures in the current window, seconds until it ends)."""
        if self.redis is not None:
            stored, ttl = await self.redis.get(key), await self.redis.ttl(key)
            return int(stored or 0), float(max(ttl, 0))
        count, ends = self._local.get(key, (0, 0.0))
        left = ends - time.monotonic()
        return (count, left) if left > 0 else (0, 0.0)

    async def check(self, email: str) -> None:
        count, left = await self._count(self._key(email))
        if count >= self.attempts:
            raise RateLimited(
                f"too many failed logins for this account: try again in {int(left) + 1} s",
                retryAfterSeconds=int(left) + 1,
            )

    async def failed(self, email: str) -> None:
        key = self._key(email)
        if self.redis is not None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, self.window, nx=True)
                await pipe.execute()
            return
        count, left = await self._count(key)
        self._local[key] = (count + 1, time.monotonic() + (left if count else self.window))

    async def succeeded(self, email: str) -> None:
        key = self._key(email)
        if self.redis is not None:
            await self.redis.delete(key)
        else:
            self._local.pop(key, None)
