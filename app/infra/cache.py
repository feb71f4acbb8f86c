"""Two cache levels with versioned keys.

L1 is per process (bounded in size, with a TTL); L2 is Redis, shared by every replica.
Keys carry what makes an entry stale: the model or adapter version where one answered,
and a per-user or per-movie *generation* that ``rateMovie`` bumps. Invalidation is one
INCR (and a message that every replica's mirror of the generations hears), never a scan;
old entries simply stop being asked for and expire.

Misses are single-flight: concurrent requests for one key wait on one fetch. With Redis
unset or unreachable, L1 and the database answer and ``cinerec_redis_up`` says degraded;
after an error L2 is skipped for a moment (a breaker) so that a dead Redis costs nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, TypeVar

from cachetools import TTLCache
from redis.exceptions import RedisError

from app.infra.coalescer import Coalescer

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from app.infra.announcements import Announcements
    from app.infra.metrics import Metrics
    from app.infra.settings import Settings

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
_MISSING = object()
INVALIDATIONS = "invalidations"  # the announcements topic of generation bumps


class Unavailable:
    """What :meth:`RedisHealth.run` answers when Redis cannot."""


UNAVAILABLE = Unavailable()
T = TypeVar("T")


class RedisHealth:
    """A breaker shared by everything that uses Redis on the request path: after a failure,
    Redis is skipped for ``cooldown`` seconds, so an outage costs one timeout, not one per
    request."""

    def __init__(self, redis: Redis | None, metrics: Metrics, cooldown: float = 2.0) -> None:
        self.redis = redis
        self.metrics = metrics
        self.cooldown = cooldown
        self._down_until = 0.0

    def usable(self) -> Redis | None:
        if self.redis is None or time.monotonic() < self._down_until:
            return None
        return self.redis

    def failed(self, exc: BaseException) -> None:
        if time.monotonic() >= self._down_until:
            log.warning("redis unreachable, serving from the process and the database: %s", exc)
        self._down_until = time.monotonic() + self.cooldown
        self.metrics.redis_up.set(0)

    def ok(self) -> None:
        self.metrics.redis_up.set(1)

    async def run(self, op: Callable[[Redis], Awaitable[T]]) -> T | Unavailable:
        """The one place Redis degrades: ``op`` on Redis when it is set and up, else
        ``UNAVAILABLE`` — unset, cooling down after a failure, or failing now (the breaker
        opens, logged once) — and the caller answers from the process and the database."""
        redis = self.usable()
        if redis is None:
            return UNAVAILABLE
        try:
            result = await op(redis)
        except (RedisError, OSError) as exc:
            self.failed(exc)
            return UNAVAILABLE
        self.ok()
        return result


class Generations:
    """Per-user and per-movie generation numbers: Redis holds the truth (INCR), each process
    a bounded mirror kept fresh by the bump announcements."""

    def __init__(self, health: RedisHealth, prefix: str, maxsize: int = 200_000) -> None:
        self.health = health
        self.prefix = prefix
        self.maxsize = maxsize
        self._mirror: OrderedDict[tuple[str, int], int] = OrderedDict()
        self.announcements: Announcements | None = None
        self._reads: Coalescer[tuple[str, int], int] = Coalescer(self._read)  # one MGET for concurrent misses

    def _key(self, kind: str, id_: int) -> str:
        return f"{self.prefix}:gen:{kind}:{id_}"

    def _remember(self, kind: str, id_: int, value: int) -> None:
        key = (kind, id_)
        self._mirror[key] = max(value, self._mirror.get(key, 0))
        self._mirror.move_to_end(key)
        while len(self._mirror) > self.maxsize:
            self._mirror.popitem(last=False)

    async def get(self, kind: str, ids: Sequence[int]) -> dict[int, int]:
        found = {i: self._mirror[(kind, i)] for i in ids if (kind, i) in self._mirror}
        missing = [i for i in dict.fromkeys(ids) if i not in found]
        if missing:
            values = await self._reads.get_many([(kind, i) for i in missing])
            found.update(zip(missing, values, strict=True))
        return found

    async def _read(self, keys: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        values = await self.health.run(lambda redis: redis.mget([self._key(kind, i) for kind, i in keys]))
        if isinstance(values, Unavailable):
            return {k: self._mirror.get(k, 0) for k in keys}
        for (kind, i), v in zip(keys, values, strict=True):
            self._remember(kind, i, int(v or 0))
        return {k: self._mirror[k] for k in keys}

    async def bump(self, kind: str, id_: int) -> None:
        """A change to this user or movie: every cached entry keyed by it is stale now."""
        counted = await self.health.run(lambda redis: redis.incr(self._key(kind, id_)))
        value = self._mirror.get((kind, id_), 0) + 1 if isinstance(counted, Unavailable) else int(counted)
        self._remember(kind, id_, value)
        if self.announcements is not None:
            await self.announcements.publish(INVALIDATIONS, {"kind": kind, "id": id_, "gen": value})

    async def heard(self, message: dict[str, Any]) -> None:
        kind, id_, gen = message.get("kind"), message.get("id"), message.get("gen")
        if isinstance(kind, str) and isinstance(id_, int) and isinstance(gen, int):
            self._remember(kind, id_, gen)

    async def forget(self) -> None:
        """After a Redis outage bumps may have been missed: ask Redis again."""
        self._mirror.clear()

    def peek(self, kind: str, id_: int) -> int:
        """The mirrored generation without asking Redis (0 when not mirrored yet)."""
        return self._mirror.get((kind, id_), 0)


def bump_generation_sync(settings: Settings, kind: str, id_: int) -> None:
    """From a command-line run (an ingest): INCR the generation and tell running servers."""
    if not settings.redis_url:
        return
    import redis

    from app.infra.announcements import publish_sync

    try:
        with redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=2) as client:
            value = int(client.incr(f"{settings.redis_prefix}:gen:{kind}:{id_}"))
    except (RedisError, OSError) as exc:
        log.warning("could not bump the %s generation: %s", kind, exc)
        return
    publish_sync(settings, INVALIDATIONS, {"kind": kind, "id": id_, "gen": value})


@dataclass(frozen=True)
class Kind:
    """One kind of cached value: its TTL, whether it goes to Redis, how it is stored there."""

    name: str
    ttl: float
    l2: bool = True
    encode: Callable[[Any], Any] = lambda v: v
    decode: Callable[[Any], Any] = lambda v: v
    keep: Callable[[Any], bool] = lambda v: True  # False: answer with it, but do not cache it


def row_codec() -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """Database rows as JSON objects in Redis, attribute-accessible again when read."""

    def encode(row: Any) -> Any:
        if row is None:
            return None
        return dict(row._mapping) if hasattr(row, "_mapping") else dict(vars(row))

    def decode(value: Any) -> Any:
        return None if value is None else SimpleNamespace(**value)

    return encode, decode


def approx_size(value: Any, depth: int = 0) -> int:
    """Roughly the bytes a cached value holds (its containers and what they hold, three
    levels down): what bounds L1 by memory, not by entries."""
    size = sys.getsizeof(value)
    if depth >= 3:
        return size
    if isinstance(value, (list, tuple)):
        return size + sum(approx_size(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return size + sum(approx_size(k, depth + 1) + approx_size(v, depth + 1) for k, v in value.items())
    if hasattr(value, "_mapping"):  # a database row
        return size + sum(approx_size(v, depth + 1) for v in value)
    if hasattr(value, "__dict__") and not isinstance(value, type):  # a namespace, a dataclass
        return size + approx_size(vars(value), depth + 1)
    return size


_ENTRY_OVERHEAD = 200  # the key, the (expiry, value) pair, the cache's own links


class TwoLevelCache:
    def __init__(
        self, health: RedisHealth, metrics: Metrics, *, prefix: str, max_bytes: int = 256 * 1024 * 1024
    ) -> None:
        self.health = health
        self.metrics = metrics
        self.prefix = prefix
        # bounded by memory: entries of 10 search hits and of a lone movie row differ 50-fold
        self._l1: TTLCache[str, tuple[float, Any, int]] = TTLCache(
            maxsize=max_bytes, ttl=3600, getsizeof=lambda entry: entry[2]
        )
        self._inflight: dict[str, asyncio.Future[Any]] = {}

    def _count(self, kind: str, level: str, result: str, n: int) -> None:
        if n:
            self.metrics.cache_requests.labels(kind=kind, level=level, result=result).inc(n)

    def _l1_get(self, key: str) -> Any:
        entry = self._l1.get(key)
        if entry is None or entry[0] < time.monotonic():
            return _MISSING
        return entry[1]

    def _l1_put(self, key: str, value: Any, ttl: float) -> None:
        size = approx_size(value) + _ENTRY_OVERHEAD
        if size <= self._l1.maxsize:
            self._l1[key] = (time.monotonic() + ttl, value, size)

    def put(self, kind: Kind, key: str, value: Any) -> None:
        """Into L1 only (warming the catalog in each process)."""
        self._l1_put(f"{kind.name}:{key}", value, kind.ttl)

    def drop(self, kind: Kind, key: str) -> None:
        self._l1.pop(f"{kind.name}:{key}", None)

    async def get_many(
        self,
        kind: Kind,
        keys: Sequence[K],
        key_str: Callable[[K], str],
        fetch: Callable[[list[K]], Awaitable[dict[K, Any]]],
        default: Any = None,
    ) -> list[Any]:
        """Values for ``keys``: L1, then L2, then ONE ``fetch`` for what is left (absent keys
        take ``default``), written back to both levels."""
        names = {k: f"{kind.name}:{key_str(k)}" for k in dict.fromkeys(keys)}
        found: dict[K, Any] = {}
        for k, name in names.items():
            value = self._l1_get(name)
            if value is not _MISSING:
                found[k] = value
        self._count(kind.name, "l1", "hit", len(found))
        missing = [k for k in names if k not in found]
        self._count(kind.name, "l1", "miss", len(missing))
        if missing and kind.l2:
            missing = await self._from_l2(kind, names, missing, found)
        if missing:
            await self._fetch(kind, names, missing, found, fetch, default)
        return [found[k] for k in keys]

    async def _from_l2(
        self, kind: Kind, names: dict[K, str], missing: list[K], found: dict[K, Any]
    ) -> list[K]:
        raw = await self.health.run(
            lambda redis: redis.mget([f"{self.prefix}:c:{names[k]}" for k in missing])
        )
        if isinstance(raw, Unavailable):
            return missing
        still = []
        for k, value in zip(missing, raw, strict=True):
            if value is None:
                still.append(k)
                continue
            decoded = kind.decode(json.loads(value))
            found[k] = decoded
            self._l1_put(names[k], decoded, kind.ttl)
        self._count(kind.name, "l2", "hit", len(missing) - len(still))
        self._count(kind.name, "l2", "miss", len(still))
        return still

    async def _fetch(
        self,
        kind: Kind,
        names: dict[K, str],
        missing: list[K],
        found: dict[K, Any],
        fetch: Callable[[list[K]], Awaitable[dict[K, Any]]],
        default: Any,
    ) -> None:
        waiting = {k: self._inflight[names[k]] for k in missing if names[k] in self._inflight}
        mine = [k for k in missing if k not in waiting]
        if mine:
            loop = asyncio.get_running_loop()
            futures = {k: loop.create_future() for k in mine}
            for k, future in futures.items():
                self._inflight[names[k]] = future
            try:
                fetched = await fetch(mine)
                values = {k: fetched.get(k, default) for k in mine}
                kept = {k: v for k, v in values.items() if kind.keep(v)}
                for k, value in values.items():
                    if k in kept:
                        self._l1_put(names[k], value, kind.ttl)
                    futures[k].set_result(value)
                found.update(values)
                if kind.l2 and kept:
                    await self._to_l2(kind, {names[k]: v for k, v in kept.items()})
            except BaseException as exc:
                for future in futures.values():
                    if not future.done():
                        future.set_exception(exc)
                        future.exception()  # retrieved: waiters re-raise it themselves
                raise
            finally:
                for k in mine:
                    self._inflight.pop(names[k], None)
        for k, future in waiting.items():
            found[k] = await asyncio.shield(future)

    async def _to_l2(self, kind: Kind, values: dict[str, Any]) -> None:
        async def write(redis: Redis) -> None:
            async with redis.pipeline(transaction=False) as pipe:
                for name, value in values.items():
                    pipe.set(
                        f"{self.prefix}:c:{name}", json.dumps(kind.encode(value)), px=int(kind.ttl * 1000)
                    )
                await pipe.execute()

        await self.health.run(write)


MOVIE = Kind("movie", 300, True, *row_codec())
GENRES = Kind("genres", 600)
GENRE_NAMES = Kind("genre-names", 300)
TAGS = Kind("tags", 600)
LINK = Kind("link", 3600, True, *row_codec())
