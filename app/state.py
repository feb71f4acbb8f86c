"""What the lifespan opens and every request shares, typed: one object on ``app.state``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from sqlalchemy.ext.asyncio import AsyncEngine

    from app.announcements import Announcements
    from app.auth import PasswordHasher
    from app.cache import Generations
    from app.clients import Network
    from app.holders import RecommenderHolder
    from app.llm import LLMHolder
    from app.metrics import Metrics
    from app.persisted import PersistedQueries, ResponseCache
    from app.services.bundle import Services
    from app.settings import Settings
    from app.websocket import Sockets


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
