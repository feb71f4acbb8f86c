"""What serves each registered model: loaded from the MLflow alias at start-up, swapped
atomically on promotion.

A request takes one reference to the current model at the start of its scoring batch,
so a swap never mixes two models inside a batch and never fails a request. With several
replicas, a promotion is announced on Redis and every replica loads the new version.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from app.infra.announcements import PROMOTIONS
from app.infra.model_registry import registry_for
from ml.hybrid import HybridRecommender
from ml.registry import CHAMPION, RECOMMENDER, ModelVersionInfo

if TYPE_CHECKING:
    from app.infra.announcements import Announcements
    from app.infra.settings import Settings

log = logging.getLogger(__name__)
S = TypeVar("S")


@dataclass(frozen=True)
class Served:
    model: HybridRecommender
    version: str


class ChampionHolder(Generic[S]):
    """What serves one registered model: its ``champion``, swapped atomically on promotion and
    rollback, and reloaded when another replica or a CLI run announces a move."""

    name: str

    def __init__(self, settings: Settings, announcements: Announcements | None = None) -> None:
        self.settings = settings
        self.registry = registry_for(settings)
        self.announcements = announcements
        self._lock = asyncio.Lock()
        if announcements is not None:
            # a move announced elsewhere, or missed during a Redis outage: re-read the alias
            announcements.on(PROMOTIONS, self._announced, resync=self.load_champion)

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
        if self.announcements is not None and alias == CHAMPION:
            await self.announcements.publish(
                PROMOTIONS, {"model": self.name, "alias": alias, "version": version}
            )

    async def _announced(self, message: dict[str, Any]) -> None:
        if message.get("model", self.name) == self.name:
            await self.load_champion()


class RecommenderHolder(ChampionHolder[Served]):
    name = RECOMMENDER

    def __init__(self, settings: Settings, announcements: Announcements | None = None) -> None:
        super().__init__(settings, announcements)
        self.current: Served | None = None
        self._others: dict[str, Served] = {}  # versions an experiment serves beside the champion

    async def version(self, version: str) -> Served:
        """A registered version, loaded once: the champion, or one an experiment's arm serves."""
        current = self.current
        if current is not None and current.version == version:
            return current
        if version not in self._others:
            self._others[version] = await self._load(version)
            while len(self._others) > 4:
                self._others.pop(next(iter(self._others)))
        return self._others[version]

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
