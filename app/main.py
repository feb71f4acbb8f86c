"""The app factory: Starlette with the GraphQL endpoint, health, readiness and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from strawberry.asgi import GraphQL

from app.cache import ReadThroughCache, keep_catalog_warm, warm_catalog
from app.db import create_engine, session_factory
from app.limits import BodySizeLimit
from app.llm import LLMHolder
from app.metrics import render
from app.ratelimit import LoginLimiter
from app.serving import ModelHolder
from app.settings import Settings, get_settings
from app.websocket import AuthenticatedTransportWS
from graphql_schema.context import Context, build_context
from graphql_schema.schema import build_schema

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.websockets import WebSocket
    from strawberry.http import GraphQLHTTPResponse
    from strawberry.types import ExecutionResult

log = logging.getLogger(__name__)


class GraphQLApp(GraphQL[Context, None]):
    """Strawberry's ASGI app with cinerec's per-request context and websocket auth."""

    graphql_transport_ws_handler_class = AuthenticatedTransportWS

    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        # Parse errors leave the operation before schema extensions see them: code them here too.
        response = await super().process_result(request, result)
        for error in response.get("errors") or []:
            if isinstance(error, dict):
                error.setdefault("extensions", {}).setdefault("code", "BAD_USER_INPUT")
        return response

    async def get_context(self, request: Request | WebSocket, response: Any = None) -> Context:
        state = request.app.state
        return build_context(
            request=request,
            response=response,
            settings=state.settings,
            sessions=state.sessions,
            authorization=request.headers.get("authorization"),
            models=state.models,
            cache=state.cache,
            login_limiter=state.login_limiter,
            llm=state.llm,
        )


async def healthz(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    checks: dict[str, str] = {}
    try:
        async with request.app.state.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # readiness reports any failure, it never raises
        log.warning("readiness: database unreachable: %s", exc)
        checks["database"] = "unreachable"
    redis: Redis | None = request.app.state.redis
    if redis is not None:
        try:
            await redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            log.warning("readiness: redis unreachable: %s", exc)
            checks["redis"] = "unreachable"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", **checks}, status_code=200 if ready else 503
    )


async def metrics(_: Request) -> Response:
    body, media_type = render()
    return Response(body, media_type=media_type)


def create_app(settings: Settings | None = None) -> Starlette:
    """A cinerec ASGI app. Database engine and Redis are opened in the lifespan."""
    settings = settings or get_settings()
    settings.signing_secret()  # fail at start-up, not on the first login, if the secret is unusable

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.engine = create_engine(settings)
        app.state.sessions = session_factory(app.state.engine)
        app.state.cache = ReadThroughCache(ttl=settings.cache_ttl_seconds)
        app.state.redis = Redis.from_url(settings.redis_url) if settings.redis_url else None
        app.state.models = ModelHolder(settings, app.state.redis)
        app.state.login_limiter = LoginLimiter(
            app.state.redis, attempts=settings.login_attempts, window_seconds=settings.login_window_seconds
        )
        app.state.llm = LLMHolder(settings, app.state.redis)
        try:
            await app.state.models.load_champion()
        except Exception:  # a broken registry must not keep the catalog down: popularity serves
            log.exception("could not load the champion model; serving popularity")
        await app.state.llm.load_champion()  # never raises: the template stands in
        tasks = [
            asyncio.create_task(app.state.models.follow()),
            asyncio.create_task(app.state.llm.follow()),
        ]
        if settings.cache_warm_movies:
            # Warm before taking traffic; afterwards, refresh in the background, page by page.
            try:
                await warm_catalog(app.state.cache, app.state.sessions, limit=settings.cache_warm_movies)
            except Exception:  # database down at start: serve anyway, /readyz says not ready
                log.exception("could not warm the catalog cache")
            warm = keep_catalog_warm(
                app.state.cache,
                app.state.sessions,
                every=settings.cache_ttl_seconds / 2,
                limit=settings.cache_warm_movies,
            )
            tasks.append(asyncio.create_task(warm))
        # The warmed catalog and the model are long-lived: keep the collector from re-walking
        # them on every full collection (those walks were the p99 latency spikes).
        gc.freeze()
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await app.state.llm.aclose()
            if app.state.redis is not None:
                await app.state.redis.aclose()
            await app.state.engine.dispose()

    graphql = GraphQLApp(build_schema(settings), graphql_ide="graphiql" if settings.graphiql else None)
    middleware = [
        Middleware(BodySizeLimit, max_bytes=settings.max_body_bytes),
        Middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["authorization", "content-type"],
        ),
    ]
    routes = [
        Route("/graphql", graphql, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", graphql),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
    ]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
