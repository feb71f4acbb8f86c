"""Announcements between replicas over Redis pub/sub: champion moves, account changes.

One follower task per process subscribes to every channel a handler was registered for.
When Redis goes away it says so (log and ``cinerec_redis_up``), retries with back-off,
and after it is back calls each channel's ``resync``: whatever was announced during the
outage was missed, so holders re-read the truth (the registry's alias, the accounts).
Without Redis (one server, as in `make demo`) the resyncs run on a timer instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

if TYPE_CHECKING:
    from prometheus_client import Gauge

    from app.infra.settings import Settings

log = logging.getLogger(__name__)

# Topics; each is the channel "<CINEREC_REDIS_PREFIX>:<topic>".
PROMOTIONS = "model-promotions"
ACCOUNTS = "accounts"
API_KEYS = "api-keys"

Handler = Callable[[dict[str, Any]], Awaitable[None]]
Resync = Callable[[], Awaitable[None]]


@dataclass
class _Subscription:
    handlers: list[Handler]
    resyncs: list[Resync]


def publish_sync(settings: Settings, topic: str, message: dict[str, Any]) -> None:
    """Announce from a command-line run (no event loop); a no-op without Redis."""
    if not settings.redis_url:
        return
    import redis

    channel = f"{settings.redis_prefix}:{topic}"
    try:
        with redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=2) as client:
            client.publish(channel, json.dumps(message))
    except (RedisError, OSError) as exc:  # servers re-read the truth when they reconnect
        log.warning("could not announce on %s: %s", channel, exc)


class Announcements:
    def __init__(
        self,
        redis_url: str | None,
        *,
        prefix: str,
        redis_up: Gauge | None = None,
        retry_max_seconds: float = 5.0,
        poll_seconds: float = 0.0,
    ) -> None:
        self.redis_url = redis_url
        self.redis_up = redis_up
        self.prefix = prefix
        self.retry_max = retry_max_seconds
        self.poll_seconds = poll_seconds
        self._subscriptions: dict[str, _Subscription] = {}
        self._publisher = (
            Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=2) if redis_url else None
        )
        self.connected = asyncio.Event()

    def _up(self, value: int) -> None:
        if self.redis_up is not None:
            self.redis_up.set(value)

    def channel(self, topic: str) -> str:
        return f"{self.prefix}:{topic}"

    def on(self, topic: str, handler: Handler, *, resync: Resync | None = None) -> None:
        sub = self._subscriptions.setdefault(self.channel(topic), _Subscription([], []))
        sub.handlers.append(handler)
        if resync is not None:
            sub.resyncs.append(resync)

    async def publish(self, topic: str, message: dict[str, Any]) -> bool:
        """Announce to every replica; False (logged) when Redis cannot be reached."""
        if self._publisher is None:
            return False
        channel = self.channel(topic)
        try:
            await self._publisher.publish(channel, json.dumps(message))
            return True
        except (RedisError, OSError) as exc:
            self._up(0)
            log.warning("could not announce on %s (replicas resync when Redis is back): %s", channel, exc)
            return False

    async def _dispatch(self, channel: str, data: bytes | str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            log.warning("ignoring a malformed announcement on %s", channel)
            return
        if not isinstance(message, dict):
            return
        for handler in self._subscriptions[channel].handlers:
            try:
                await handler(message)
            except Exception:  # one bad announcement must not stop the follower
                log.exception("handling an announcement on %s failed", channel)

    async def _resync(self) -> None:
        for channel, sub in self._subscriptions.items():
            for resync in sub.resyncs:
                try:
                    await resync()
                except Exception:
                    log.exception("resync after a Redis outage failed (%s)", channel)

    async def follow(self) -> None:
        """Listen until cancelled, reconnecting after every outage. Without Redis, re-read the
        truth every ``poll_seconds`` instead (when set): nothing else would say what changed."""
        if not self._subscriptions:
            return
        if self.redis_url is None:
            while self.poll_seconds > 0:
                await asyncio.sleep(self.poll_seconds)
                await self._resync()
            return
        delay, outage = 0.1, False
        while True:
            client = Redis.from_url(self.redis_url, socket_connect_timeout=2, health_check_interval=5)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(*self._subscriptions)
                self._up(1)
                self.connected.set()
                if outage:
                    log.info("redis is back: following announcements again")
                    await self._resync()
                outage, delay = False, 0.1
                loop = asyncio.get_running_loop()
                pinged = loop.time()
                while True:
                    message = await asyncio.wait_for(pubsub.get_message(timeout=1.0), 5)
                    if message is not None and message.get("type") == "message":
                        channel = message["channel"]
                        await self._dispatch(
                            channel.decode() if isinstance(channel, bytes) else channel, message["data"]
                        )
                    elif loop.time() - pinged > 2:
                        # a quiet channel says nothing about Redis: ask, so that an outage is seen
                        await asyncio.wait_for(pubsub.ping(), 2)
                        pinged = loop.time()
            except (RedisError, OSError, TimeoutError) as exc:
                self.connected.clear()
                self._up(0)
                if not outage:
                    log.warning("redis unreachable, announcements paused (retrying): %s", exc)
                outage = True
            finally:
                try:
                    await pubsub.aclose()
                    await client.aclose()
                except (RedisError, OSError):
                    pass
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_max)

    async def aclose(self) -> None:
        if self._publisher is not None:
            try:
                await self._publisher.aclose()
            except (RedisError, OSError):
                pass
