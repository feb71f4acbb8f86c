"""What the lifespan opens and every request shares, typed: one object on ``app.state``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from sqlalchemy.ext.asyncio import AsyncEngine

    from app.infra.announcements import Announcements
    from app.infra.auth import PasswordHasher
    from app.infra.cache import Generations
    from app.infra.metrics import Metrics
    from app.infra.settings import Settings
    from app.server.callers import Network
    from app.server.persisted_queries import PersistedQueries, ResponseCache
    from app.server.websockets import Sockets
    from app.services.services import Services
    from app.serving.champions import RecommenderHolder
    from app.serving.llm_holder import LLMHolder


@dataclass
class AppState:
    """The app's own parts. Requests reach them only through ``services``; the HTTP layer
    (persisted queries, the response cache, websockets) and the lifespan use the rest."""

    settings: Settings
    metrics: Metrics
    engine: AsyncEngine
    redis: Redis | None
    announcements: Announcements
    generations: Generations
    persisted: PersistedQueries
    responses: ResponseCache
    models: RecommenderHolder
    llm: LLMHolder
    hasher: PasswordHasher
    sockets: Sockets
    services: Services
    trusted_proxies: list[Network]
