"""Drift checks: the ratings made since the serving model's data cut-off against the training
snapshot stored with that model version (``ml/drift.py`` describes and compares them).

``check`` runs one (what ``cinerec monitor drift`` and the server's interval call); reports are
stored in ``drift_checks``, where every replica reads the latest for the admin query and the
Prometheus gauges. Evidently is imported only by ``check``: the serving processes run it as a
subprocess (``DriftMonitor``), so its import (seconds, ~175 MiB) never lands in a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
from sqlalchemy import insert, select, text

from app.infra.errors import BadUserInput, NotFound
from app.infra.model_registry import registry_for
from app.infra.tables import drift_checks
from app.services import catalog
from ml.drift import DriftResult, describe, load_reference
from ml.registry import CHAMPION, RECOMMENDER

if TYPE_CHECKING:
    from evidently.core.report import Snapshot
    from redis.asyncio import Redis
    from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

    from app.infra.metrics import Metrics
    from app.infra.settings import Settings

log = logging.getLogger(__name__)


class NoReference(NotFound):
    pass


class TooFewRatings(BadUserInput):
    pass


@dataclass(frozen=True)
class StoredDrift:
    generated_at: float
    model_version: str
    result: DriftResult


@dataclass
class DriftOutcome:
    stored: StoredDrift
    snapshot: Snapshot
    since: float  # the model's data cut-off: the current window's ratings are newer


async def _current(
    engine: AsyncEngine, since: float, limit: int
) -> tuple[pd.DataFrame, dict[int, list[str]]]:
    """The newest ``limit`` ratings made after ``since``, and their movies' genres."""
    from app.infra.database import session_factory

    async with session_factory(engine)() as session:
        rows = (
            await session.execute(
                text(
                    "SELECT user_id, movie_id, rating FROM ratings WHERE timestamp > :since "
                    "ORDER BY timestamp DESC LIMIT :limit"
                ),
                {"since": int(since), "limit": limit},
            )
        ).all()
        ratings = pd.DataFrame([tuple(r) for r in rows], columns=["user_id", "movie_id", "rating"])
        movies = [int(m) for m in ratings["movie_id"].unique()]
        genres = await catalog.genres_by_movie_ids(session=session, movie_ids=movies) if movies else {}
    return ratings, dict(genres)


async def store(engine: AsyncEngine, version: str, result: DriftResult, generated_at: float) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            insert(drift_checks).values(
                generated_at=int(generated_at), model_version=version, report=json.dumps(result.as_dict())
            )
        )


async def latest(sessions: async_sessionmaker) -> StoredDrift | None:
    """The newest stored report, or None before the first check."""
    table = drift_checks
    async with sessions() as session:
        row = (
            await session.execute(
                select(table.c.generated_at, table.c.model_version, table.c.report)
                .order_by(table.c.generated_at.desc(), table.c.check_id.desc())
                .limit(1)
            )
        ).first()
    if row is None:
        return None
    return StoredDrift(float(row[0]), str(row[1]), DriftResult.from_dict(json.loads(row[2])))


def check(settings: Settings, *, version: str | None = None, keep: bool = False) -> DriftOutcome:
    """Compare the ratings since ``version``'s cut-off (the champion's by default) with its
    training snapshot; with ``keep``, store the report for the server to show."""
    from app.infra.database import create_engine
    from ml.drift import compare

    registry = registry_for(settings)
    version = version or registry.alias_version(RECOMMENDER, CHAMPION)
    if version is None:
        raise NoReference("no recommender version is serving: train one first")
    folder = registry.download(RECOMMENDER, version, settings.home / "models")
    snapshot = load_reference(folder)
    meta: dict[str, Any] = json.loads((folder / "meta.json").read_text())
    since = meta.get("data_cutoff")
    if snapshot is None or since is None:
        raise NoReference(f"version {version} was trained without a drift snapshot: train a new version")
    reference, counts = snapshot

    async def run() -> DriftOutcome:
        engine = create_engine(settings)
        try:
            ratings, genres = await _current(engine, float(since), settings.drift_max_rows)
            if len(ratings) < settings.drift_min_rows:
                raise TooFewRatings(
                    f"{len(ratings)} ratings since version {version}'s cut-off; "
                    f"a check needs at least {settings.drift_min_rows} (CINEREC_DRIFT_MIN_ROWS)"
                )
            current = describe(ratings, counts, genres)
            result, report = await asyncio.to_thread(
                compare, reference, current, drift_share=settings.drift_share
            )
            stored = StoredDrift(time.time(), version, result)
            if keep:
                await store(engine, version, result, stored.generated_at)
            return DriftOutcome(stored, report, float(since))
        finally:
            await engine.dispose()

    return asyncio.run(run())


LOCK = "drift:lock"


async def run_command(args: list[str], env: dict[str, str]) -> tuple[int, bytes]:
    """(exit code, standard error) of a command; cancelled, the command is killed.

    Spawned by the standard library's Popen, not the event loop's subprocess support: uvloop
    spawns with fork(), whose pre-fork handlers (OpenBLAS's among them) can wait forever on a
    thread that is in the middle of a BLAS call, freezing the loop; CPython spawns with vfork(),
    which runs none of them (tests/app/test_drift_spawn.py). The wait polls on the loop and
    holds no thread of the default executor; standard error goes to a file, so no pipe fills."""
    with tempfile.TemporaryFile() as errors:
        # vfork: returns once the child has exec'd (see above for why not the loop's own spawn)
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=errors, env=env)  # noqa: ASYNC220
        try:
            while process.poll() is None:  # noqa: ASYNC110 (no event to wait on: nothing signals an exit)
                await asyncio.sleep(0.1)
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait()
            raise
        errors.seek(0)
        return process.returncode or 0, errors.read()


class DriftMonitor:
    """In the server: keeps the drift gauges at the latest stored report, and, every
    ``drift_interval_seconds``, runs a check (``python -m app monitor drift --store``) in a
    subprocess, one replica at a time (a Redis lock; each process alone without Redis)."""

    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker,
        metrics: Metrics,
        redis: Redis | None,
        *,
        refresh_seconds: float = 60.0,
    ) -> None:
        interval = settings.drift_interval_seconds
        refresh_seconds = min(refresh_seconds, interval) if interval else refresh_seconds
        self.settings = settings
        self.sessions = sessions
        self.metrics = metrics
        self.redis = redis
        self.refresh_seconds = refresh_seconds
        self.last: StoredDrift | None = None

    def show(self, stored: StoredDrift) -> None:
        m, result = self.metrics, stored.result
        m.drift_share.set(result.drift_share)
        m.drift_detected.set(1 if result.dataset_drift else 0)
        m.drift_rows.set(result.current_rows)
        m.drift_generated.set(stored.generated_at)
        for column in result.columns:
            m.drift_statistic.labels(column=column.name).set(column.statistic)
            m.drift_column.labels(column=column.name).set(1 if column.drifted else 0)

    async def refresh(self) -> StoredDrift | None:
        stored = await latest(self.sessions)
        if stored is not None:
            self.last = stored
            self.show(stored)
        return stored

    async def _claim(self) -> bool:
        if self.redis is None:
            return True
        key = f"{self.settings.redis_prefix}{LOCK}"
        try:
            return bool(await self.redis.set(key, "1", nx=True, ex=self.settings.drift_interval_seconds))
        except Exception:  # Redis down: skip this round rather than run on every replica
            return False

    async def run_check(self) -> int:
        """One check in a subprocess; its exit code (2: nothing to compare yet)."""
        s = self.settings
        env = {
            **os.environ,  # in a deployment, the server's own configuration
            # and what this process was given, which may not be in its environment
            "CINEREC_ENV": s.env,
            "CINEREC_HOME": str(s.home),
            "CINEREC_DATABASE_URL": s.database_url,
            "CINEREC_MLFLOW_TRACKING_URI": s.mlflow_tracking_uri,
            "CINEREC_DRIFT_SHARE": str(s.drift_share),
            "CINEREC_DRIFT_MIN_ROWS": str(s.drift_min_rows),
            "CINEREC_DRIFT_MAX_ROWS": str(s.drift_max_rows),
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        code, err = await run_command([sys.executable, "-m", "app", "monitor", "drift", "--store"], env)
        if code not in (0, 2):
            log.warning("drift check failed (exit %s): %s", code, err.decode(errors="replace")[-1000:])
        return code

    async def run(self) -> None:
        interval = self.settings.drift_interval_seconds
        next_check = time.monotonic() + (interval or 0)
        while True:
            try:
                stored = await self.refresh()
                due = interval and time.monotonic() >= next_check
                fresh = stored is not None and time.time() - stored.generated_at < interval
                if due and not fresh and await self._claim():
                    await self.run_check()
                    await self.refresh()
                if due:
                    next_check = time.monotonic() + interval
            except asyncio.CancelledError:
                raise
            except Exception:  # the database may be down; the next round tries again
                log.warning("drift refresh failed", exc_info=True)
            await asyncio.sleep(self.refresh_seconds)
