"""Load a MovieLens directory (ml-25m layout) into the database, atomically.

One run is one transaction: a strict run that meets any bad row writes nothing and
raises :class:`IngestError` with the first problems; ``skip_invalid`` loads the good
rows and writes the rejected ones, with reasons, to a reject file. Re-running over
the same files changes nothing (upserts). On PostgreSQL ratings stream through COPY;
into an empty ratings table the keys are dropped for the load and rebuilt after,
which is several times faster than maintaining them row by row.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy import Table, text
from sqlalchemy.dialects import postgresql, sqlite
from tqdm import tqdm

from app.infra.tables import (
    RATINGS_MOVIE_FK,
    RATINGS_MOVIE_INDEX,
    RATINGS_PK,
    RATINGS_TIME_INDEX,
    RATINGS_USER_FK,
    RATINGS_USER_TIME_INDEX,
)
from app.infra.tables import genome_tags as GENOME_TAGS
from app.infra.tables import genres as GENRES
from app.infra.tables import links as LINKS
from app.infra.tables import movie_genres as MOVIE_GENRES
from app.infra.tables import movies as MOVIES
from app.infra.tables import tags as TAGS
from app.infra.tables import users as USERS
from ml.data import movielens

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(__name__)


MAX_REPORTED = 20
_BATCH = 2000  # rows per multi-row INSERT: stays under SQLite's and asyncpg's parameter limits


@dataclass
class IngestReport:
    movies: int = 0
    ratings: int = 0
    tags: int = 0
    links: int = 0
    users: int = 0
    genome_scores: int = 0
    rejected: int = 0
    reject_file: Path | None = None
    seconds: float = 0.0


@dataclass
class IngestError(Exception):
    """Bad rows in a strict run: nothing was written."""

    problems: list[movielens.Problem]
    total: int

    def __str__(self) -> str:
        lines = [f"ingest refused: {self.total} invalid row(s); nothing was written"]
        lines += [f"  {p}" for p in self.problems[:MAX_REPORTED]]
        if self.total > MAX_REPORTED:
            lines.append(
                f"  ... and {self.total - MAX_REPORTED} more (use --skip-invalid to load the valid rows)"
            )
        return "\n".join(lines)


def _insert(conn: AsyncConnection, table: Table) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


async def _upsert(
    conn: AsyncConnection, table: Table, rows: Sequence[dict[str, Any]], keys: list[str], update: list[str]
) -> None:
    for start in range(0, len(rows), _BATCH):
        stmt = _insert(conn, table).values(list(rows[start : start + _BATCH]))
        if update:
            stmt = stmt.on_conflict_do_update(index_elements=keys, set_={c: stmt.excluded[c] for c in update})
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=keys)
        await conn.execute(stmt)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """DataFrame rows as dicts with plain Python values (pd.NA -> None)."""
    out = frame.astype(object).where(frame.notna(), None)
    return out.to_dict("records")  # type: ignore[return-value]


def _chunks(values: Sequence[int], size: int = _BATCH) -> Iterable[list[int]]:
    for start in range(0, len(values), size):
        yield [int(v) for v in values[start : start + size]]


async def _existing_movie_ids(conn: AsyncConnection) -> np.ndarray:
    rows = (await conn.execute(text("SELECT movie_id FROM movies"))).scalars().all()
    return np.asarray(rows, dtype=np.int64)


class _RatingsSink:
    """Where validated rating chunks go: COPY on PostgreSQL, multi-row INSERTs on SQLite."""

    def __init__(self, conn: AsyncConnection, *, direct: bool) -> None:
        self.conn = conn
        self.pg = conn.dialect.name == "postgresql"
        self.direct = direct  # straight into an emptied, key-less ratings table
        self.target = "ratings" if direct else "stage_ratings"

    async def open(self) -> None:
        if self.direct:
            await self.conn.execute(text("SET LOCAL maintenance_work_mem = '512MB'"))
            await self.conn.execute(text(f"ALTER TABLE ratings DROP CONSTRAINT {RATINGS_USER_FK}"))
            await self.conn.execute(text(f"ALTER TABLE ratings DROP CONSTRAINT {RATINGS_MOVIE_FK}"))
            await self.conn.execute(text(f"ALTER TABLE ratings DROP CONSTRAINT {RATINGS_PK}"))
            await self.conn.execute(text(f"DROP INDEX {RATINGS_MOVIE_INDEX}"))
            await self.conn.execute(text(f"DROP INDEX {RATINGS_USER_TIME_INDEX}"))
            await self.conn.execute(text(f"DROP INDEX {RATINGS_TIME_INDEX}"))
            return
        if not self.pg:  # SQLite temp tables live as long as the connection, which the pool reuses
            await self.conn.execute(text("DROP TABLE IF EXISTS temp.stage_ratings"))
        await self.conn.execute(
            text(
                "CREATE TEMP TABLE stage_ratings (user_id INTEGER NOT NULL, movie_id INTEGER NOT NULL, "
                "rating FLOAT NOT NULL, timestamp BIGINT NOT NULL)" + (" ON COMMIT DROP" if self.pg else "")
            )
        )

    async def write(self, chunk: movielens.RatingsChunk) -> None:
        if chunk.frame.empty:
            return
        if self.pg:
            raw = await self.conn.get_raw_connection()
            await raw.driver_connection.copy_to_table(  # type: ignore[union-attr]
                self.target,
                source=io.BytesIO(chunk.csv),
                columns=["user_id", "movie_id", "rating", "timestamp"],
                format="csv",
            )
            return
        rows = chunk.frame.to_dict("records")
        for start in range(0, len(rows), 50_000):
            await self.conn.execute(
                text(
                    f"INSERT INTO {self.target} (user_id, movie_id, rating, timestamp) "
                    "VALUES (:user_id, :movie_id, :rating, :timestamp)"
                ),
                rows[start : start + 50_000],
            )

    async def drop(self, keys: np.ndarray) -> None:
        """Remove every staged row of these (user_id << 32 | movie_id) keys."""
        rows = [{"u": int(k >> 32), "m": int(k & 0xFFFFFFFF)} for k in keys]
        if rows:
            await self.conn.execute(
                text(f"DELETE FROM {self.target} WHERE user_id = :u AND movie_id = :m"), rows
            )

    async def finish(self, *, duplicates: bool) -> None:
        conn = self.conn
        if self.direct:
            if duplicates:  # identical repeats of a key: keep one row each
                await conn.execute(
                    text(
                        "DELETE FROM ratings WHERE ctid IN (SELECT ctid FROM (SELECT ctid, row_number() "
                        "OVER (PARTITION BY user_id, movie_id ORDER BY timestamp DESC) AS n FROM ratings) d "
                        "WHERE n > 1)"
                    )
                )
            await conn.execute(
                text(
                    "INSERT INTO users (user_id) SELECT DISTINCT user_id FROM ratings ON CONFLICT DO NOTHING"
                )
            )
            await conn.execute(
                text(f"ALTER TABLE ratings ADD CONSTRAINT {RATINGS_PK} PRIMARY KEY (user_id, movie_id)")
            )
            await conn.execute(text(f"CREATE INDEX {RATINGS_MOVIE_INDEX} ON ratings (movie_id)"))
            await conn.execute(
                text(f"CREATE INDEX {RATINGS_USER_TIME_INDEX} ON ratings (user_id, timestamp)")
            )
            await conn.execute(
                text(
                    f"CREATE INDEX {RATINGS_TIME_INDEX} ON ratings USING brin (timestamp) "
                    "WITH (autosummarize = on)"
                )
            )
            await conn.execute(
                text(
                    f"ALTER TABLE ratings ADD CONSTRAINT {RATINGS_USER_FK} FOREIGN KEY (user_id) "
                    "REFERENCES users (user_id) ON DELETE CASCADE"
                )
            )
            await conn.execute(
                text(
                    f"ALTER TABLE ratings ADD CONSTRAINT {RATINGS_MOVIE_FK} FOREIGN KEY (movie_id) "
                    "REFERENCES movies (movie_id) ON DELETE CASCADE"
                )
            )
            return
        await conn.execute(
            text(
                "INSERT INTO users (user_id) SELECT DISTINCT user_id FROM stage_ratings WHERE true "
                "ON CONFLICT (user_id) DO NOTHING"
            )
        )
        source = (
            "SELECT user_id, movie_id, max(rating), max(timestamp) FROM stage_ratings "
            "GROUP BY user_id, movie_id"
            if duplicates
            else "SELECT user_id, movie_id, rating, timestamp FROM stage_ratings WHERE true"
        )
        await conn.execute(
            text(
                f"INSERT INTO ratings (user_id, movie_id, rating, timestamp) {source} "
                "ON CONFLICT (user_id, movie_id) DO UPDATE SET rating = excluded.rating, "
                "timestamp = excluded.timestamp"
            )
        )
        if not self.pg:
            await conn.execute(text("DROP TABLE temp.stage_ratings"))


async def refresh_movie_stats(conn: AsyncConnection) -> None:
    """Recompute every movie's ratings_count, rating_sum and rating_mean from the ratings."""
    await conn.execute(text("DROP TABLE IF EXISTS movie_stats"))
    await conn.execute(
        text(
            "CREATE TEMP TABLE movie_stats AS "
            "SELECT movie_id, count(*) AS n, sum(rating) AS total FROM ratings GROUP BY movie_id"
        )
    )
    await conn.execute(
        text(
            "UPDATE movies SET ratings_count = s.n, rating_sum = s.total, rating_mean = s.total / s.n "
            "FROM movie_stats AS s WHERE movies.movie_id = s.movie_id"
        )
    )
    await conn.execute(
        text(
            "UPDATE movies SET ratings_count = 0, rating_sum = 0, rating_mean = 0 "
            "WHERE ratings_count <> 0 AND movie_id NOT IN (SELECT movie_id FROM movie_stats)"
        )
    )
    await conn.execute(text("DROP TABLE movie_stats"))


async def _write_movies(conn: AsyncConnection, movies: pd.DataFrame) -> None:
    await _upsert(
        conn,
        MOVIES,
        _records(movies[["movie_id", "title", "year"]]),
        ["movie_id"],
        ["title", "year"],
    )
    names = sorted({g for genres in movies["genres"] for g in genres})
    await _upsert(conn, GENRES, [{"name": n} for n in names], ["name"], [])
    ids: dict[str, int] = {
        name: genre_id
        for name, genre_id in (await conn.execute(text("SELECT name, genre_id FROM genres"))).all()
    }
    for batch in _chunks(movies["movie_id"].tolist()):
        await conn.execute(MOVIE_GENRES.delete().where(MOVIE_GENRES.c.movie_id.in_(batch)))
    pairs = [
        {"movie_id": int(m), "genre_id": ids[g]}
        for m, genres in zip(movies["movie_id"], movies["genres"], strict=True)
        for g in dict.fromkeys(genres)
    ]
    await _upsert(conn, MOVIE_GENRES, pairs, ["movie_id", "genre_id"], [])


async def _write_genome(conn: AsyncConnection, tags: pd.DataFrame, scores: pd.DataFrame) -> int:
    """The genome is a snapshot: replace it whole (so re-running is idempotent)."""
    await conn.execute(text("DELETE FROM genome_scores"))
    await conn.execute(text("DELETE FROM genome_tags"))
    await _upsert(conn, GENOME_TAGS, _records(tags), ["tag_id"], ["tag"])
    if conn.dialect.name == "postgresql":
        raw = await conn.get_raw_connection()
        await raw.driver_connection.copy_to_table(  # type: ignore[union-attr]
            "genome_scores",
            source=io.BytesIO(scores.to_csv(header=False, index=False).encode()),
            columns=["movie_id", "tag_id", "relevance"],
            format="csv",
        )
    else:
        rows = scores.to_dict("records")
        for start in range(0, len(rows), 50_000):
            await conn.execute(
                text(
                    "INSERT INTO genome_scores (movie_id, tag_id, relevance) "
                    "VALUES (:movie_id, :tag_id, :relevance)"
                ),
                rows[start : start + 50_000],
            )
    return len(scores)


def write_rejects(path: Path, problems: Iterable[movielens.Problem]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "line", "reason", "row"])
        for p in problems:
            writer.writerow([p.file, p.line, p.reason, p.raw])


async def ingest(
    *,
    engine: AsyncEngine,
    directory: Path,
    skip_invalid: bool = False,
    reject_file: Path | None = None,
    chunk_rows: int = 1_000_000,
) -> IngestReport:
    """Load ``directory`` (ml-25m layout) into the database in one transaction.

    Raises :class:`movielens.DatasetError` for a missing file or wrong header and
    :class:`IngestError` for bad rows in a strict run; either way nothing is written.
    """
    started = time.perf_counter()
    present = movielens.check_layout(directory)
    report = IngestReport()
    problems: list[movielens.Problem] = []

    movies = movielens.read_movies(directory / "movies.csv")
    problems += movies.problems
    async with engine.begin() as conn:
        known = np.union1d(movies.frame["movie_id"].to_numpy(), await _existing_movie_ids(conn))
        extra: dict[str, movielens.Table] = {}
        if "links.csv" in present:
            extra["links"] = movielens.read_links(directory / "links.csv", known)
        if "tags.csv" in present:
            extra["tags"] = movielens.read_tags(directory / "tags.csv", known)
        if "users.csv" in present:
            extra["users"] = movielens.read_users(directory / "users.csv")
        if "genome-scores.csv" in present:
            extra["genome_tags"], extra["genome_scores"] = movielens.read_genome(directory, known)
        for table in extra.values():
            problems += table.problems

        pg = conn.dialect.name == "postgresql"
        empty = (await conn.execute(text("SELECT NOT EXISTS (SELECT 1 FROM ratings)"))).scalar_one()
        sink = _RatingsSink(conn, direct=pg and bool(empty))
        await sink.open()
        duplicates = movielens.DuplicateTracker()
        path = directory / "ratings.csv"
        with (
            tqdm(
                total=path.stat().st_size, unit="B", unit_scale=True, desc="ratings.csv", disable=None
            ) as bar,
            contextlib.closing(movielens.iter_ratings(path, known, chunk_rows)) as chunks,
        ):
            for chunk in chunks:
                problems += chunk.problems
                duplicates.add(chunk.frame, chunk.lines)
                report.ratings += len(chunk.frame)
                if skip_invalid or not problems:  # a strict run stops writing at the first problem
                    await sink.write(chunk)
                bar.update(len(chunk.csv))
        any_duplicate, conflicts, conflict_keys = duplicates.result()
        problems += conflicts
        if problems and not skip_invalid:
            problems.sort(key=lambda p: (p.file, p.line))
            raise IngestError(problems[:MAX_REPORTED], len(problems))
        # Which of two conflicting ratings is right cannot be told: neither is loaded.
        await sink.drop(conflict_keys)
        report.ratings -= len(conflicts) + len(conflict_keys)

        await _write_movies(conn, movies.frame)
        report.movies = len(movies.frame)
        if "users" in extra:
            users = extra["users"].frame
            await _upsert(
                conn,
                USERS,
                _records(users),
                ["user_id"],
                ["age", "gender", "occupation", "zip_code"],
            )
            report.users = len(users)
        await sink.finish(duplicates=any_duplicate)
        if "links" in extra:
            links = extra["links"].frame
            await _upsert(conn, LINKS, _records(links), ["movie_id"], ["imdb_id", "tmdb_id"])
            report.links = len(links)
        if "tags" in extra:
            tags = extra["tags"].frame
            await _upsert(conn, TAGS, _records(tags), ["user_id", "movie_id", "tag"], [])
            report.tags = len(tags)
        if "genome_scores" in extra:
            report.genome_scores = await _write_genome(
                conn, extra["genome_tags"].frame, extra["genome_scores"].frame
            )
        await refresh_movie_stats(conn)

    if pg:
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("ANALYZE"))
    if problems:
        problems.sort(key=lambda p: (p.file, p.line))
        report.reject_file = reject_file or Path("rejects.csv")
        write_rejects(report.reject_file, problems)
        report.rejected = len(problems)
    report.seconds = time.perf_counter() - started
    log.info("ingest done: %s", report)
    return report
