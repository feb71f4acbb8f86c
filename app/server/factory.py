"""The app factory: Starlette with the GraphQL endpoint, health, readiness and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

from app.infra.announcements import ACCOUNTS, API_KEYS, Announcements
from app.infra.auth import PasswordHasher
from app.infra.cache import INVALIDATIONS, Generations, RedisHealth, TwoLevelCache
from app.infra.database import create_engine, session_factory
from app.infra.metrics import Metrics
from app.infra.settings import Settings, get_settings
from app.infra.throttles import Counters, LoginThrottle, RateLimiter, RegisterThrottle, TokenBuckets
from app.server import web_client
from app.server.body_limit import BodySizeLimit
from app.server.callers import parse_networks
from app.server.graphql_endpoint import CachedAnswers, GraphQLApp
from app.server.persisted_queries import PersistedQueries, ResponseCache, read_manifest
from app.server.state import AppState
from app.server.websockets import Sockets
from app.services.accounts import AccountService, ActiveAccounts
from app.services.api_keys import ApiKeys
from app.services.audit import AuditLog
from app.services.catalog import CatalogService
from app.services.catalog_changes import CatalogChanges
from app.services.drift import DriftMonitor
from app.services.experiments import ExperimentService
from app.services.model_versions import ModelVersions
from app.services.privacy import PersonalData
from app.services.ratings import UserService
from app.services.services import Services
from app.serving.champions import RecommenderHolder
from app.serving.explanations import ExplanationService
from app.serving.histories import Histories
from app.serving.home import HomePages
from app.serving.llm_holder import Fallback, LLMHolder
from app.serving.movie_search import MovieSearch
from app.serving.parts import ServingParts
from app.serving.pipeline import Pipeline
from app.serving.recommendations import RecommendationService
from graphql_schema.schema import build_schema
from ml import embeddings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
    from starlette.requests import Request

log = logging.getLogger(__name__)


async def healthz(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready means "can serve": the database answers. Redis down is reported as degraded
    (limits and caches fall back to the process) but does not take the replica out."""
    state: AppState = request.app.state.cinerec
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(5):
            async with state.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # readiness reports any failure, it never raises
        log.warning("readiness: database unreachable: %s", exc)
        checks["database"] = "unreachable"
    if state.redis is not None:
        try:
            async with asyncio.timeout(state.settings.redis_timeout_seconds * 2):
                await state.redis.ping()
            checks["redis"] = "ok"
            state.metrics.redis_up.set(1)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("readiness: redis unreachable (serving degraded): %s", exc)
            checks["redis"] = "unreachable"
            state.metrics.redis_up.set(0)
    if checks["database"] != "ok":
        status, code = "not ready", 503
    elif checks.get("redis", "ok") != "ok":
        status, code = "degraded", 200
    else:
        status, code = "ready", 200
    return JSONResponse({"status": status, **checks}, status_code=code)


def metrics_endpoint(settings: Settings, metrics: Metrics) -> Callable[[Request], Awaitable[Response]]:
    """``/metrics``; behind ``Authorization: Bearer <metrics_token>`` when a token is set, and
    closed in production until one is."""
    token = settings.metrics_token

    async def expose(request: Request) -> Response:
        if token is not None:
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), token.encode()):
                return JSONResponse({"error": "metrics need Authorization: Bearer <token>"}, status_code=401)
        elif settings.production:
            return JSONResponse(
                {"error": "metrics are closed in production until CINEREC_METRICS_TOKEN is set"},
                status_code=403,
            )
        body, media_type = metrics.render()
        return Response(body, media_type=media_type)

    return expose


async def _close(name: str, step: Awaitable[object]) -> None:
    """One shutdown step; a failure is logged and the rest of the shutdown still runs."""
    try:
        await step
    except Exception:
        log.exception("shutdown: closing %s failed", name)


def _redis(settings: Settings) -> Redis | None:
    if not settings.redis_url:
        return None
    return Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=settings.redis_timeout_seconds,
        socket_timeout=settings.redis_timeout_seconds,
        # a pooled connection that died with a Redis restart is retried once on a fresh one,
        # rather than read as an outage
        retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), 1),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=10,
    )


def _accounts(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], counters: Counters, hasher: PasswordHasher
) -> AccountService:
    return AccountService(
        sessions,
        settings=settings,
        hasher=hasher,
        logins=LoginThrottle(
            counters,
            attempts=settings.login_attempts,
            window_seconds=settings.login_window_seconds,
            per_address=settings.login_attempts_per_address,
        ),
        registrations=RegisterThrottle(
            counters, per_window=settings.register_attempts, window_seconds=settings.register_window_seconds
        ),
        active=ActiveAccounts(sessions, ttl=settings.account_cache_seconds),
    )


def _follow_accounts(announcements: Announcements, accounts: AccountService, sockets: Sockets) -> None:
    """An account changed (deleted, demoted) on any replica: its cached checks go, and its
    open sockets lose the rights at once."""

    async def account_changed(message: dict[str, object]) -> None:
        account_id = message.get("accountId")
        changed = account_id if isinstance(account_id, int) else None
        accounts.active.forget(changed)
        await sockets.account_changed(changed)

    async def forget_accounts() -> None:
        accounts.active.forget()
        await sockets.account_changed(None)

    announcements.on(ACCOUNTS, account_changed, resync=forget_accounts)

    async def changed_here(account_id: int) -> None:
        await account_changed({"accountId": account_id})  # this replica at once, Redis or not
        await announcements.publish(ACCOUNTS, {"accountId": account_id})

    accounts.changed = changed_here


def _follow_keys(announcements: Announcements, keys: ApiKeys, sockets: Sockets) -> None:
    """A key revoked on any replica: this replica's checks go (its next request re-reads the
    epoch anyway) and the key's open sockets close; after a Redis outage, every check goes."""

    async def key_revoked(message: dict[str, object]) -> None:
        keys.forget()
        account_id = message.get("accountId")
        await sockets.account_changed(account_id if isinstance(account_id, int) else None)

    async def forget_keys() -> None:
        keys.forget()
        await sockets.account_changed(None)

    announcements.on(API_KEYS, key_revoked, resync=forget_keys)

    async def revoked_here(prefix: str, account_id: int) -> None:
        await key_revoked({"prefix": prefix, "accountId": account_id})
        await announcements.publish(API_KEYS, {"prefix": prefix, "accountId": account_id})

    keys.revoked = revoked_here


def open_state(settings: Settings, metrics: Metrics) -> AppState:
    """Everything a running app holds, wired together; nothing is loaded or started yet."""
    engine = create_engine(settings, metrics)
    sessions = session_factory(engine)
    redis = _redis(settings)
    announcements = Announcements(
        settings.redis_url,
        prefix=settings.redis_prefix,
        redis_up=metrics.redis_up,
        poll_seconds=settings.poll_without_redis_seconds,
    )
    health = RedisHealth(redis, metrics)
    counters = Counters(health, prefix=settings.redis_prefix)
    generations = Generations(health, settings.redis_prefix)
    generations.announcements = announcements
    announcements.on(INVALIDATIONS, generations.heard, resync=generations.forget)
    cache = TwoLevelCache(health, metrics, prefix=settings.redis_prefix, max_bytes=settings.cache_l1_bytes)
    models = RecommenderHolder(settings, announcements)
    llm = LLMHolder(settings, announcements, metrics)
    parts = ServingParts(
        sessions,
        models,
        llm,
        Fallback(metrics, settings.llm_timeout_seconds),
        metrics,
        Histories(sessions, cache, generations),
        cache,
        generations,
    )
    experiments = ExperimentService(
        sessions, models, announcements, window_seconds=settings.experiment_window_seconds, metrics=metrics
    )
    pipeline = Pipeline(parts, rerank_candidates=settings.llm_rerank_candidates)
    recommendations = RecommendationService(pipeline, secret=settings.signing_secret())
    recommendations.experiments = experiments
    hasher = PasswordHasher(
        threads=settings.password_hash_threads, max_waiting=settings.password_hash_queue, metrics=metrics
    )
    accounts = _accounts(settings, sessions, counters, hasher)
    sockets = Sockets(per_account=settings.ws_max_per_account)
    _follow_accounts(announcements, accounts, sockets)
    api_keys = ApiKeys(sessions, health, prefix=settings.redis_prefix)
    accounts.keys = api_keys
    _follow_keys(announcements, api_keys, sockets)
    services = Services(
        catalog=CatalogService(sessions, cache, generations),
        catalog_changes=CatalogChanges(sessions, generations),
        users=UserService(sessions, cache, generations),
        accounts=accounts,
        api_keys=api_keys,
        audit=AuditLog(sessions),
        personal=PersonalData(sessions, generations),
        recommendations=recommendations,
        home=HomePages(recommendations),
        movie_search=MovieSearch(
            pipeline, max_hits=settings.max_recommendations, floor=settings.search_floor
        ),
        explanations=ExplanationService(parts),
        models=ModelVersions(models, llm),
        experiments=experiments,
        drift=DriftMonitor(
            settings, sessions, metrics, redis, refresh_seconds=settings.drift_refresh_seconds
        ),
        limits=RateLimiter(settings, TokenBuckets(counters)),
        metrics=metrics,
    )
    allowlist = (
        read_manifest(settings.persisted_queries_manifest)
        if settings.persisted_queries == "allowlist" and settings.persisted_queries_manifest
        else None
    )
    return AppState(
        settings=settings,
        metrics=metrics,
        engine=engine,
        redis=redis,
        announcements=announcements,
        generations=generations,
        persisted=PersistedQueries(
            health,
            prefix=settings.redis_prefix,
            allowlist=allowlist,
            enabled=settings.persisted_queries != "off",
            max_bytes=settings.persisted_queries_bytes,
        ),
        responses=ResponseCache(health, prefix=settings.redis_prefix, ttl=settings.response_cache_seconds),
        models=models,
        llm=llm,
        hasher=hasher,
        sockets=sockets,
        services=services,
        trusted_proxies=parse_networks(settings.trusted_proxies),
    )


async def start(state: AppState) -> list[asyncio.Task[None]]:
    """Load the models, warm the caches and start the background tasks, before traffic."""
    settings, services = state.settings, state.services
    await state.hasher.warm()
    await state.generations.get("catalog", [0])  # the catalog's generation, for cached responses
    state.metrics.redis_up.set(1 if state.redis is not None else 0)
    try:
        await state.models.load_champion()
    except Exception:  # a broken registry must not keep the catalog down: popularity serves
        log.exception("could not load the champion model; serving popularity")
    await state.llm.load_champion()  # never raises: the template stands in
    try:
        await services.experiments.reload()  # an experiment running on the other replicas runs here too
    except Exception:
        log.exception("could not load the running experiment; serving the champion to everyone")
    if state.models.current is not None:
        # The text encoder behind searchMovies, loaded before traffic rather than by the first
        # search (without a model there is no search; a later promotion loads it on first use).
        await asyncio.to_thread(embeddings.load)
    tasks = [
        asyncio.create_task(state.announcements.follow()),
        asyncio.create_task(services.experiments.impressions.run()),
        asyncio.create_task(services.drift.run()),
    ]
    if settings.cache_warm_movies:
        # Warm before taking traffic; afterwards, refresh in the background, page by page.
        try:
            await services.catalog.warm(limit=settings.cache_warm_movies)
        except Exception:  # database down at start: serve anyway, /readyz says not ready
            log.exception("could not warm the catalog cache")
        warm = services.catalog.keep_warm(
            every=settings.cache_ttl_seconds / 2, limit=settings.cache_warm_movies
        )
        tasks.append(asyncio.create_task(warm))
    return tasks


async def stop(state: AppState, tasks: list[asyncio.Task[None]]) -> None:
    """Every step runs even when one before it fails."""
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    await _close("impressions", state.services.experiments.impressions.flush())
    await _close("the LLM", state.llm.aclose())
    await _close("announcements", state.announcements.aclose())
    if state.redis is not None:
        await _close("redis", state.redis.aclose())
    await _close("the database engine", state.engine.dispose())
    state.hasher.close()
    state.metrics.process_exiting()


def create_app(settings: Settings | None = None) -> Starlette:
    """A cinerec ASGI app. Database engine, Redis and models are opened in the lifespan."""
    settings = settings or get_settings()
    settings.signing_secret()  # fail at start-up, not on the first login, if the secret is unusable
    metrics = Metrics()  # this app's own registry

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state = app.state.cinerec = open_state(settings, metrics)
        tasks = await start(state)
        # The warmed catalog and the model are long-lived: keep the collector from re-walking
        # them on every full collection (those walks were the p99 latency spikes).
        gc.freeze()
        try:
            yield
        finally:
            await stop(state, tasks)

    graphql = GraphQLApp(
        build_schema(settings),
        graphql_ide="graphiql" if settings.graphiql_enabled else None,
        # the origins CORS lets call over HTTP may subscribe too (Strawberry's own origin check)
        allowed_origins=settings.cors_origins,
    )
    middleware = [
        Middleware(CachedAnswers),  # first: a repeated anonymous GET pays for no other layer
        Middleware(BodySizeLimit, max_bytes=settings.max_body_bytes),
        Middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["authorization", "content-type"],
        ),
    ]
    routes = [
        Route("/graphql", graphql),  # any method: the endpoint answers a wrong one with a JSON 405
        WebSocketRoute("/graphql", graphql),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_endpoint(settings, metrics)),
        *web_client.routes(graphiql=settings.graphiql_enabled),
    ]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
