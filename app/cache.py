"""An in-process read-through cache for catalog rows, one per app instance.

Movies, genres, links and tags change only on ingest and, for rating statistics, on
rateMovie (which drops the movie's entry here at once). Entries expire after ``ttl``
seconds, which bounds how stale another replica or a concurrent ingest can look.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from cachetools import TTLCache

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from app.metrics import Metrics

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
_MISSING = object()
WARM_PAGE = 2000


class ReadThroughCache:
    def __init__(self, metrics: Metrics, *, maxsize: int = 200_000, ttl: float = 60.0) -> None:
        self.lookups = metrics.cache_lookups
        self._entries: TTLCache[tuple[str, Hashable], Any] = TTLCache(maxsize=maxsize, ttl=ttl)

    async def get_many(
        self,
        namespace: str,
        keys: Sequence[K],
        fetch: Callable[[list[K]], Awaitable[dict[K, Any]]],
        default: Any,
    ) -> list[Any]:
        """Values for ``keys``; the misses are fetched in ONE call and cached, absent ones as ``default``."""
        found: dict[K, Any] = {}
        missing: list[K] = []
        for key in dict.fromkeys(keys):
            value = self._entries.get((namespace, key), _MISSING)
            if value is _MISSING:
                missing.append(key)
            else:
                found[key] = value
        self.lookups.labels(namespace=namespace, result="hit").inc(len(found))
        if missing:
            self.lookups.labels(namespace=namespace, result="miss").inc(len(missing))
            fetched = await fetch(missing)
            for key in missing:
                found[key] = self._entries[(namespace, key)] = fetched.get(key, default)
        return [found[k] for k in keys]

    def put_many(self, namespace: str, values: dict[Any, Any]) -> None:
        for key, value in values.items():
            self._entries[(namespace, key)] = value

    def drop(self, namespace: str, key: Hashable) -> None:
        self._entries.pop((namespace, key), None)

    def clear(self) -> None:
        self._entries.clear()


async def warm_catalog(
    cache: ReadThroughCache, sessions: async_sessionmaker[AsyncSession], *, limit: int
) -> int:
    """Load up to ``limit`` movies (most rated first) and their genres into ``cache``, a page at a
    time, yielding to the event loop between pages so that serving never stalls on it."""
    from app.services import catalog

    loaded, after = 0, None
    while loaded < limit:
        async with sessions() as session:
            rows = await catalog.movies_after(
                session=session, after=after, limit=min(WARM_PAGE, limit - loaded)
            )
            if not rows:
                break
            ids = [r.movie_id for r in rows]
            genres = await catalog.genres_by_movie_ids(session=session, movie_ids=ids)
        cache.put_many("movie", {r.movie_id: r for r in rows})
        cache.put_many("genres", {m: genres.get(m, []) for m in ids})
        loaded, after = loaded + len(rows), ids[-1]
        await asyncio.sleep(0)
    return loaded


async def keep_catalog_warm(
    cache: ReadThroughCache, sessions: async_sessionmaker[AsyncSession], *, every: float, limit: int
) -> None:
    """Re-warm the catalog every ``every`` seconds (entries expire after the cache's TTL)."""
    while True:
        await asyncio.sleep(every)
        try:
            log.info("catalog cache refreshed: %d movies", await warm_catalog(cache, sessions, limit=limit))
        except Exception:  # a failed refresh leaves reads to go through to the database
            log.exception("catalog cache refresh failed")
