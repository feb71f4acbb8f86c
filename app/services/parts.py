"""What the model-backed services share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from app.cache import Generations, TwoLevelCache
    from app.holders import RecommenderHolder
    from app.llm import Fallback, LLMHolder
    from app.metrics import Metrics
    from app.services.histories import Histories


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
