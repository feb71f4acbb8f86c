"""Schema migrations through Alembic, driven from the CLI and the server start-up."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import migrations
from app.infra.errors import CinerecError

# Alembic is imported where it is used: a command that never migrates starts without it.
if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Connection
    from sqlalchemy.ext.asyncio import AsyncEngine

    from app.infra.settings import Settings


log = logging.getLogger(__name__)


class SchemaBehind(CinerecError):
    """The database's schema is older than this cinerec, and migrating was not allowed."""


def alembic_config(settings: Settings) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.attributes["settings"] = settings
    return cfg


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Bring the database to ``revision`` (blocking; call outside a running event loop)."""
    from alembic import command

    command.upgrade(alembic_config(settings), revision)


def head_revision(settings: Settings) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(settings)).get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    def _current(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as connection:
        return await connection.run_sync(_current)


async def revision_gap(settings: Settings) -> tuple[str | None, str | None]:
    """(the database's revision, the newest this cinerec knows)."""
    from app.infra.database import create_engine

    engine = create_engine(settings)
    try:
        return await current_revision(engine), head_revision(settings)
    finally:
        await engine.dispose()


def ensure_schema(settings: Settings, *, migrate: bool) -> None:
    """Run pending migrations, or refuse with ``SchemaBehind`` when ``migrate`` is off."""
    current, head = asyncio.run(revision_gap(settings))
    if current == head:
        return
    if not migrate:
        raise SchemaBehind(
            f"database schema is at revision {current or 'none'} but this cinerec needs {head}: "
            "run `cinerec db upgrade` (or start with CINEREC_AUTO_MIGRATE=true)"
        )
    log.info("migrating database from %s to %s", current or "empty", head)
    upgrade(settings)
