"""The serving model: loaded from the MLflow alias at start-up, swapped atomically on promotion.

A request takes one reference to the current model at the start of its scoring batch,
so a swap never mixes two models inside a batch and never fails a request. With several
replicas, a promotion is announced on Redis and every replica loads the new version.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from ml.hybrid import HybridRecommender
from ml.registry import CHAMPION, RECOMMENDER, ModelVersionInfo, Registry

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from app.settings import Settings

log = logging.getLogger(__name__)
CHANNEL = "cinerec:model-promotions"
S = TypeVar("S")


@dataclass(frozen=True)
class Served:
    model: HybridRecommender
    version: str


def registry_for(settings: Settings) -> Registry:
    return Registry(settings.mlflow_tracking_uri, settings.home / "mlartifacts")


def announce_sync(settings: Settings, model: str, version: str) -> None:
    """Tell running servers (through Redis, when configured) that ``model``'s champion moved."""
    if not settings.redis_url:
        return
    import redis

    with redis.Redis.from_url(settings.redis_url) as client:
        client.publish(CHANNEL, json.dumps({"model": model, "alias": CHAMPION, "version": version}))


def register_version(
    settings: Settings, registry: Registry, name: str, *, source: str, run_id: str, promote: bool
) -> tuple[str, str | None]:
    """A new version of ``name``: the champion when ``promote`` or when none is yet. Running
    servers hear of a champion move. Returns (new version, champion now)."""
    before = registry.alias_version(name, CHAMPION)
    version = registry.register(name, source=source, run_id=run_id)
    if promote:
        registry.set_alias(name, CHAMPION, version)
    champion = registry.alias_version(name, CHAMPION)
    if champion != before and champion is not None:
        announce_sync(settings, name, champion)
    return version, champion


async def follow_announcements(redis: Redis, model: str, reload: Callable[[], Awaitable[None]]) -> None:
    """Call ``reload`` whenever a champion move of ``model`` is announced on the channel."""
    pubsub = redis.pubsub()
    await pubsub.subscribe(CHANNEL)
    try:
        async for message in pubsub.listen():
            if message.get("type") != "message":
                continue
            try:
                if json.loads(message["data"]).get("model", model) == model:
                    await reload()
            except Exception:  # a bad announcement must not stop the listener
                log.exception("could not load the announced %s", model)
    finally:
        await pubsub.aclose()


class ChampionHolder(Generic[S]):
    """What serves one registered model: its ``champion``, swapped atomically on promotion and
    rollback, and reloaded when another replica or a CLI run announces a move."""

    name: str

    def __init__(self, settings: Settings, redis: Redis | None = None) -> None:
        self.settings = settings
        self.registry = registry_for(settings)
        self.redis = redis
        self._lock = asyncio.Lock()

    async def _load(self, version: str) -> S:
        raise NotImplementedError

    async def _swap(self, served: S) -> None:
        raise NotImplementedError

    async def load_champion(self) -> None:
        raise NotImplementedError

    async def promote(self, version: str, alias: str = CHAMPION) -> ModelVersionInfo:
        """Point ``alias`` at ``version``; for ``champion``, load it first and then swap it in."""
        async with self._lock:
            served = await self._load(version) if alias == CHAMPION else None
            await asyncio.to_thread(self.registry.set_alias, self.name, alias, version)
            if served is not None:
                await self._swap(served)
        await self._announce(alias, version)
        return await asyncio.to_thread(self.registry.version, self.name, version)

    async def rollback(self, alias: str = CHAMPION) -> ModelVersionInfo:
        async with self._lock:
            version = await asyncio.to_thread(self.registry.rollback, self.name, alias)
            if alias == CHAMPION:
                await self._swap(await self._load(version))
        await self._announce(alias, version)
        return await asyncio.to_thread(self.registry.version, self.name, version)

    async def _announce(self, alias: str, version: str) -> None:
        if self.redis is not None and alias == CHAMPION:
            await self.redis.publish(
                CHANNEL, json.dumps({"model": self.name, "alias": alias, "version": version})
            )

    async def follow(self) -> None:
        """Load the champion whenever another replica (or a CLI run) announces a move."""
        if self.redis is not None:
            await follow_announcements(self.redis, self.name, self.load_champion)


class ModelHolder(ChampionHolder[Served]):
    name = RECOMMENDER

    def __init__(self, settings: Settings, redis: Redis | None = None) -> None:
        super().__init__(settings, redis)
        self.current: Served | None = None

    async def _load(self, version: str) -> Served:
        path = await asyncio.to_thread(
            self.registry.download, RECOMMENDER, version, self.settings.home / "models"
        )
        model = await asyncio.to_thread(HybridRecommender.load, path)
        return Served(model, version)

    async def _swap(self, served: Served) -> None:
        self.current = served  # one reference assignment: atomic for every reader

    async def load_champion(self) -> None:
        """Serve whatever ``champion`` points at now (nothing yet: popularity fallback)."""
        version = await asyncio.to_thread(self.registry.alias_version, RECOMMENDER, CHAMPION)
        if version is None or (self.current and self.current.version == version):
            return
        async with self._lock:
            await self._swap(await self._load(version))
        log.info("serving %s version %s", RECOMMENDER, version)
