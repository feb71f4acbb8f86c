"""Alembic is the only way tables are made: it must match the models on both databases,
also after a bulk ingest rebuilt the ratings keys, and `serve` must refuse a stale schema."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

import app.infra.tables  # noqa: F401
from app.infra.database import create_engine
from tests.conftest import Databases, ingest_into


def _diff(settings) -> list:
    async def run() -> list:
        engine = create_engine(settings)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(
                    lambda sync: compare_metadata(MigrationContext.configure(sync), SQLModel.metadata)
                )
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_migrated_schema_matches_models_even_after_bulk_load(
    databases: Databases, backend: str, movielens_dir: Path
) -> None:
    settings = databases.settings(backend)
    assert _diff(settings) == []

    ingest_into(settings, movielens_dir)
    assert _diff(settings) == []


def test_serve_refuses_a_schema_that_is_behind(databases: Databases) -> None:
    settings = databases.settings("postgresql", migrate=False)
    env = {**os.environ, "CINEREC_DATABASE_URL": settings.database_url, "CINEREC_HOME": str(settings.home)}
    result = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--no-migrate", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3
    assert "cinerec db upgrade" in result.stderr and "revision none" in result.stderr
    upgraded = subprocess.run(
        [sys.executable, "-m", "app", "db", "upgrade"], env=env, capture_output=True, text=True, check=False
    )
    assert upgraded.returncode == 0, upgraded.stderr
    current = subprocess.run(
        [sys.executable, "-m", "app", "db", "current"], env=env, capture_output=True, text=True, check=False
    )
    assert "current: 0009" in current.stdout
