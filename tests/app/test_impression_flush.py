"""The impressions buffer's flush, on a real database: a flush called while another is still
writing (an experiment report's, beside the background one) returns only once those rows are
in the table. Before, it found the buffer empty and returned at once, and the report read the
table without them: an arm with no users (a fresh-clone run, 7 December)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import func, insert, select

from app.infra.database import create_engine, session_factory
from app.infra.settings import Settings
from app.infra.tables import experiments, impressions
from app.services.experiments import ImpressionWriter
from tests.conftest import Databases


def test_a_flush_beside_one_still_writing_returns_when_its_rows_are_in(databases: Databases) -> None:
    asyncio.run(_flushes(databases.settings("postgresql")))


async def _flushes(settings: Settings) -> None:
    engine = create_engine(settings)
    sessions = session_factory(engine)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                insert(experiments).values(
                    name="e", salt="s", arms="[]", active=True, window_seconds=60, started_at=0
                )
            )
        entered, go_on = asyncio.Event(), asyncio.Event()

        @contextlib.asynccontextmanager
        async def held_open() -> AsyncIterator[Any]:
            """The real session, opened once the test lets the first writer go on."""
            entered.set()
            await go_on.wait()
            async with sessions() as session:
                yield session

        writer = ImpressionWriter(held_open)  # type: ignore[arg-type]
        row = {"experiment": "e", "arm": "a", "version": "1", "rank": 1, "shown_at": 0}
        writer.add([{**row, "user_id": 1, "movie_id": m} for m in range(1, 6)])
        background = asyncio.create_task(writer.flush())
        await entered.wait()  # it has taken the 5 rows and waits for its session
        report = asyncio.create_task(writer.flush())
        await asyncio.sleep(0)  # one turn of the loop: an empty-buffer flush would be done now
        assert not report.done()
        go_on.set()
        await report
        async with sessions() as session:
            written = (await session.execute(select(func.count()).select_from(impressions))).scalar_one()
        assert written == 5
        assert await background == 5
    finally:
        await engine.dispose()
