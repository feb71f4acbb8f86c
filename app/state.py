"""What the lifespan opens and every request shares, typed: one object on ``app.state``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

    from app.announcements import Announcements
    from app.auth import PasswordHasher
    from app.cache import Generations, RedisHealth, TwoLevelCache
    from app.clients import Network
    from app.llm import LLMHolder
    from app.metrics import Metrics
    from app.persisted import PersistedQueries, ResponseCache
    from app.ratelimit import LoginThrottle, RegisterThrottle, TokenBuckets
    from app.services.accounts import ActiveAccounts
    from app.services.catalog import CatalogReader
    from app.services.drift import DriftMonitor
    from app.services.experiments import ExperimentService
    from app.services.explanations import ExplanationService
    from app.services.ratings import UserReader
    from app.services.recommendations import RecommendationService
    from app.serving import RecommenderHolder
    from app.settings import Settings
    from app.websocket import Sockets


@dataclass
class AppState:
    settings: Settings
    metrics: Metrics
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    redis: Redis | None
    announcements: Announcements
    health: RedisHealth
    generations: Generations
    cache: TwoLevelCache
    catalog: CatalogReader
    users: UserReader
    persisted: PersistedQueries
    responses: ResponseCache
    models: RecommenderHolder
    llm: LLMHolder
    recommendations: RecommendationService
    experiments: ExperimentService
    explanations: ExplanationService
    drift: DriftMonitor
    hasher: PasswordHasher
    buckets: TokenBuckets
    login_throttle: LoginThrottle
    register_throttle: RegisterThrottle
    accounts: ActiveAccounts
    sockets: Sockets
    trusted_proxies: list[Network]
