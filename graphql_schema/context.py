"""The per-request context: settings, sessions, dataloaders and the caller."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.auth import Principal, bearer_token, read_token
from app.errors import CinerecError, Unauthenticated
from resolvers.loaders import Loaders, create_loaders

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.websockets import WebSocket

    from app.cache import ReadThroughCache
    from app.llm import LLMHolder
    from app.ratelimit import LoginLimiter
    from app.serving import ModelHolder
    from app.settings import Settings


@dataclass
class Context:
    request: Request | WebSocket
    response: Response | None
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    loaders: Loaders
    models: ModelHolder | None = None
    cache: ReadThroughCache | None = None
    login_limiter: LoginLimiter | None = None
    llm: LLMHolder | None = None
    principal: Principal | None = None
    auth_error: CinerecError | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def require_principal(self) -> Principal:
        if self.auth_error is not None:
            raise self.auth_error
        if self.principal is None:
            raise Unauthenticated("authentication required: send 'Authorization: Bearer <token>'")
        return self.principal


def build_context(
    *,
    request: Request | WebSocket,
    response: Response | None,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    authorization: str | None,
    models: ModelHolder | None = None,
    cache: ReadThroughCache | None = None,
    login_limiter: LoginLimiter | None = None,
    llm: LLMHolder | None = None,
) -> Context:
    """A context for one request; a bad token is kept and raised only where auth is needed."""
    ctx = Context(
        request,
        response,
        settings,
        sessions,
        create_loaders(sessions, models, cache, llm, settings),
        models=models,
        cache=cache,
        login_limiter=login_limiter,
        llm=llm,
    )
    try:
        token = bearer_token(authorization)
        if token is not None:
            ctx.principal = read_token(token, settings)
    except CinerecError as exc:
        ctx.auth_error = exc
    return ctx
