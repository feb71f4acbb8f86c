"""The experiment report's query at 100,000 impressions, on SQLite and PostgreSQL: the one
served (each side grouped by pair once, then joined, migration 0008's index on the clicked
pair) against the one before issue 32 (an EXISTS over the arm's clicks per impression), with
the new index and with the old one (experiment, arm), in the same run.

    python -m benchmarks.experiment_report [--impressions 100000] [--clicks 40000]

Each database is migrated and filled with one experiment of two arms: users of 100 shown
movies each, a click on ``clicks`` of those pairs, and a rating of 4 on every tenth pair.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import insert, text

from app.infra.database import create_engine, session_factory
from app.infra.migrations import upgrade
from app.infra.settings import Settings
from app.infra.tables import clicks, experiments, impressions, ratings, users
from app.services.experiments import ExperimentService
from benchmarks.common import machine, pg_exec, pg_url, save

BEFORE = (
    "WITH shown AS (SELECT arm, user_id, movie_id, min(shown_at) AS shown_at "
    "FROM impressions WHERE experiment = :name GROUP BY arm, user_id, movie_id) "
    "SELECT s.arm, count(*) AS shown, count(r.user_id) AS hits, "
    "sum(CASE WHEN EXISTS (SELECT 1 FROM clicks c WHERE c.experiment = :name "
    "AND c.arm = s.arm AND c.user_id = s.user_id AND c.movie_id = s.movie_id "
    "AND c.clicked_at >= s.shown_at AND c.clicked_at <= s.shown_at + :window) "
    "THEN 1 ELSE 0 END) AS clicks FROM shown s "
    "LEFT JOIN ratings r ON r.user_id = s.user_id AND r.movie_id = s.movie_id "
    "AND r.rating >= :positive AND r.timestamp >= s.shown_at "
    "AND r.timestamp <= s.shown_at + :window GROUP BY s.arm, s.user_id"
)


async def _fill(settings: Settings, n_impressions: int, n_clicks: int) -> None:
    engine = create_engine(settings)
    rng = random.Random(0)
    n_users = n_impressions // 100
    now = int(time.time())
    shown = [
        {
            "experiment": "bench",
            "arm": "a" if u % 2 else "b",
            "version": "1",
            "user_id": u,
            "movie_id": m,
            "rank": m,
            "shown_at": now,
        }
        for u in range(1, n_users + 1)
        for m in range(1, 101)
    ]
    picked = rng.sample(shown, n_clicks)
    async with engine.begin() as conn:
        await conn.execute(insert(users), [{"user_id": u} for u in range(1, n_users + 1)])
        await conn.execute(
            text("INSERT INTO movies (movie_id, title) VALUES (:m, :t)"),
            [{"m": m, "t": f"Movie {m}"} for m in range(1, 101)],
        )
        await conn.execute(
            insert(experiments).values(
                name="bench",
                salt="s",
                arms=json.dumps(
                    [{"alias": "a", "version": "1", "weight": 1}, {"alias": "b", "version": "1", "weight": 1}]
                ),
                active=False,
                window_seconds=86400,
                started_at=now,
            )
        )
        for start in range(0, len(shown), 5000):
            await conn.execute(insert(impressions), shown[start : start + 5000])
        await conn.execute(
            insert(clicks),
            [
                {
                    "recommendation": uuid.uuid4().hex,
                    "user_id": s["user_id"],
                    "movie_id": s["movie_id"],
                    "version": "1",
                    "experiment": "bench",
                    "arm": s["arm"],
                    "clicked_at": now + 1,
                }
                for s in picked
            ],
        )
        await conn.execute(
            insert(ratings),
            [
                {"user_id": s["user_id"], "movie_id": s["movie_id"], "rating": 4.0, "timestamp": now + 2}
                for s in shown[::10]
            ],
        )
    await engine.dispose()


async def _time(settings: Settings, old_index: bool) -> dict[str, float]:
    engine = create_engine(settings)
    sessions = session_factory(engine)
    service = ExperimentService(sessions, None, None, window_seconds=86400)  # type: ignore[arg-type]
    started = time.perf_counter()
    report = await service.report("bench")
    served = time.perf_counter() - started
    async with sessions() as session:
        started = time.perf_counter()
        old = (await session.execute(text(BEFORE), {"name": "bench", "positive": 4.0, "window": 86400})).all()
        before = time.perf_counter() - started
        before_old_index = float("nan")
        if old_index:  # as it ran before migration 0008, without the index on the clicked pair
            before_old_index = await _old_index(session)
    await engine.dispose()
    assert sum(a.clicks for a in report.arms) == sum(int(r.clicks) for r in old)  # the same answer
    return {
        "served_s": round(served, 3),
        "before_query_s": round(before, 3),
        "before_query_and_index_s": round(before_old_index, 3),
        "impressions": sum(a.impressions for a in report.arms),
        "clicks": sum(a.clicks for a in report.arms),
    }


async def _old_index(session: Any) -> float:
    await session.execute(text("DROP INDEX ix_clicks_experiment_pair"))
    await session.execute(text("CREATE INDEX ix_clicks_experiment_arm ON clicks (experiment, arm)"))
    await session.commit()
    started = time.perf_counter()
    await session.execute(text(BEFORE), {"name": "bench", "positive": 4.0, "window": 86400})
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--impressions", type=int, default=100_000)
    parser.add_argument("--clicks", type=int, default=40_000)
    parser.add_argument(
        "--old-index", action="store_true", help="also time the old query on the old index (slow on SQLite)"
    )
    args = parser.parse_args()
    results: dict[str, object] = {"machine": machine(), **vars(args)}
    with tempfile.TemporaryDirectory() as home:
        name = f"bench_report_{uuid.uuid4().hex[:8]}"
        pg_exec(f'CREATE DATABASE "{name}"')
        try:
            for backend, url in (
                ("sqlite", f"sqlite+aiosqlite:///{Path(home) / 'report.db'}"),
                ("postgresql", pg_url(name)),
            ):
                settings = Settings(home=Path(home), database_url=url, env="test")
                upgrade(settings)
                asyncio.run(_fill(settings, args.impressions, args.clicks))
                results[backend] = asyncio.run(_time(settings, args.old_index))
        finally:
            pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    save("experiment_report", results)


if __name__ == "__main__":
    main()
