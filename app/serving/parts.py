"""What the model-backed services share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from app.infra.cache import Generations, TwoLevelCache
    from app.infra.metrics import Metrics
    from app.serving.champions import RecommenderHolder
    from app.serving.histories import Histories
    from app.serving.llm_holder import Fallback, LLMHolder


@dataclass(frozen=True)
class ServingParts:
    """What the model-backed services share: sessions, the champions, the LLM fallback policy,
    the app's metrics."""

    sessions: async_sessionmaker[AsyncSession]
    models: RecommenderHolder
    llm: LLMHolder
    fallback: Fallback
    metrics: Metrics
    histories: Histories
    cache: TwoLevelCache
    generations: Generations


class ServesModels:
    """A model-backed service: it holds the shared parts as its own attributes."""

    def __init__(self, parts: ServingParts) -> None:
        self.parts = parts
        self.sessions = parts.sessions
        self.models = parts.models
        self.llm = parts.llm
        self.fallback = parts.fallback
        self.metrics = parts.metrics
        self.histories = parts.histories
        self.cache = parts.cache
        self.generations = parts.generations


class CachedReads:
    """A service that reads the database through the two cache levels, keyed by generation."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], cache: TwoLevelCache, generations: Generations
    ) -> None:
        self.sessions = sessions
        self.cache = cache
        self.generations = generations
