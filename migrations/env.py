"""Alembic environment: runs migrations over the async engine cinerec uses."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from alembic import context
from sqlmodel import SQLModel

import app.infra.tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from app.infra.database import create_engine
from app.infra.settings import get_settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

target_metadata = SQLModel.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    settings = context.config.attributes.get("settings") or get_settings()
    engine = create_engine(settings)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("cinerec runs migrations online only: use `cinerec db upgrade`")
connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    asyncio.run(_run_async())
