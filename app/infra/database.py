"""Async database engine and sessions, with a statement counter for /metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

if TYPE_CHECKING:
    from app.infra.metrics import Metrics
    from app.infra.settings import Settings


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def create_engine(settings: Settings, metrics: Metrics | None = None) -> AsyncEngine:
    """An async engine for ``settings.database_url`` (asyncpg or aiosqlite); with ``metrics``,
    every statement is counted."""
    kwargs: dict[str, Any] = {}
    if settings.is_sqlite:
        settings.home.mkdir(parents=True, exist_ok=True)
    else:
        kwargs.update(pool_size=settings.db_pool_size, max_overflow=settings.db_pool_size, pool_pre_ping=True)
    engine = create_async_engine(settings.database_url, **kwargs)
    if metrics is not None:
        counter = metrics.sql_queries
        event.listen(engine.sync_engine, "before_cursor_execute", lambda *_: counter.inc())
    if settings.is_sqlite:
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def dialect_insert(session: AsyncSession) -> Any:
    """The session's dialect's INSERT, which has ON CONFLICT DO NOTHING / DO UPDATE."""
    from sqlalchemy.dialects import postgresql, sqlite

    postgres = session.bind is not None and session.bind.dialect.name == "postgresql"
    return (postgresql if postgres else sqlite).insert
