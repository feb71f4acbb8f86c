"""Ratings: a user's ratings page by page, counts, and rating a movie."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from app.infra.cache import Kind
from app.infra.coalescer import Coalescer
from app.infra.database import dialect_insert
from app.infra.errors import BadUserInput, NotFound
from app.infra.tables import (
    RATING_MAX,
    RATING_MIN,
    deleted_ratings,
    dismissals,
    movies,
    ratings,
    users,
)
from app.serving.parts import CachedReads

if TYPE_CHECKING:
    from sqlalchemy import Row, Update
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from app.infra.cache import Generations, TwoLevelCache


def check_rating(value: float) -> float:
    if not RATING_MIN <= value <= RATING_MAX or (value * 2) % 1 != 0:
        raise BadUserInput(
            f"rating must be between {RATING_MIN} and {RATING_MAX} in steps of 0.5, got {value}",
            field="rating",
        )
    return float(value)


async def users_by_ids(*, session: AsyncSession, user_ids: Sequence[int]) -> dict[int, Row[Any]]:
    rows = (await session.execute(select(users).where(users.c.user_id.in_(user_ids)))).all()
    return {row.user_id: row for row in rows}


async def ratings_count_by_user_ids(*, session: AsyncSession, user_ids: Sequence[int]) -> dict[int, int]:
    stmt = (
        select(ratings.c.user_id, func.count())
        .where(ratings.c.user_id.in_(user_ids))
        .group_by(ratings.c.user_id)
    )
    return dict((await session.execute(stmt)).all())


@dataclass(frozen=True)
class RatingPage:
    rows: list[Row[Any]]
    has_next: bool


async def ratings_page(
    *, session: AsyncSession, user_id: int, after: tuple[int, int] | None, limit: int
) -> RatingPage:
    """A user's ratings, newest first; ``after`` = (timestamp, movie_id) of the last row seen."""
    where = [ratings.c.user_id == user_id]
    if after is not None:
        ts, movie_id = after
        where.append(
            or_(ratings.c.timestamp < ts, and_(ratings.c.timestamp == ts, ratings.c.movie_id > movie_id))
        )
    stmt = (
        select(ratings)
        .where(*where)
        .order_by(ratings.c.timestamp.desc(), ratings.c.movie_id.asc())
        .limit(limit + 1)
    )
    rows = list((await session.execute(stmt)).all())
    return RatingPage(rows[:limit], len(rows) > limit)


@dataclass(frozen=True)
class RatingRow:
    """A rating as stored (the same fields as a row of ``ratings``)."""

    user_id: int
    movie_id: int
    rating: float
    timestamp: int


async def rate_movie(*, session: AsyncSession, user_id: int, movie_id: int, rating: float) -> RatingRow:
    """Insert or replace the user's rating and keep the movie's statistics in step, in one
    transaction. Concurrent ratings of one movie by one user serialise on the rating's key:
    the insert that loses waits for the winner, then updates its row."""
    value = check_rating(rating)
    now = int(time.time())
    exists = (await session.execute(select(movies.c.retired).where(movies.c.movie_id == movie_id))).first()
    if exists is None:
        raise NotFound(f"movie {movie_id} does not exist")
    if exists.retired:
        raise BadUserInput(
            f"movie {movie_id} was retired from the catalog: it can no longer be rated", field="movieId"
        )
    dialect = postgresql if session.bind is not None and session.bind.dialect.name == "postgresql" else sqlite
    inserted = await session.execute(
        dialect.insert(ratings)
        .values(user_id=user_id, movie_id=movie_id, rating=value, timestamp=now)
        .on_conflict_do_nothing(index_elements=["user_id", "movie_id"])
    )
    if inserted.rowcount == 1:  # type: ignore[attr-defined]
        d_count, d_sum = 1, value
    else:  # a rating exists (perhaps committed a moment ago by a concurrent request): replace it
        lock = select(ratings.c.rating).where(ratings.c.user_id == user_id, ratings.c.movie_id == movie_id)
        if dialect is postgresql:
            lock = lock.with_for_update()
        old = (await session.execute(lock)).scalar_one()
        await session.execute(
            ratings.update()
            .where(ratings.c.user_id == user_id, ratings.c.movie_id == movie_id)
            .values(rating=value, timestamp=now)
        )
        d_count, d_sum = 0, value - old
    # Relative updates so that concurrent ratings of one movie do not overwrite each other.
    await session.execute(
        update(movies)
        .where(movies.c.movie_id == movie_id)
        .values(
            ratings_count=movies.c.ratings_count + d_count,
            rating_sum=movies.c.rating_sum + d_sum,
            rating_mean=(movies.c.rating_sum + d_sum) / (movies.c.ratings_count + d_count),
        )
    )
    # rated again after a deletion: the deletion no longer hides a trained rating
    await session.execute(
        deleted_ratings.delete().where(
            deleted_ratings.c.user_id == user_id, deleted_ratings.c.movie_id == movie_id
        )
    )
    await session.commit()
    # What was written, not a re-read: once the commit succeeded the answer is known.
    return RatingRow(user_id, movie_id, value, now)


async def _movie_exists(session: AsyncSession, movie_id: int, field: str) -> None:
    if (
        await session.execute(select(movies.c.movie_id).where(movies.c.movie_id == movie_id))
    ).first() is None:
        raise BadUserInput(f"movie {movie_id} does not exist", field=field)


def without_rating(movie_id: int, value: float) -> Update:
    """The movie's statistics with one rating of ``value`` taken out (relative, so that
    concurrent changes to one movie do not overwrite each other)."""
    return (
        update(movies)
        .where(movies.c.movie_id == movie_id)
        .values(
            ratings_count=movies.c.ratings_count - 1,
            rating_sum=movies.c.rating_sum - value,
            rating_mean=case(
                (movies.c.ratings_count > 1, (movies.c.rating_sum - value) / (movies.c.ratings_count - 1)),
                else_=0.0,
            ),
        )
    )


async def delete_rating(*, session: AsyncSession, user_id: int, movie_id: int) -> None:
    """Remove the user's rating and take it out of the movie's statistics, in one transaction;
    a tombstone tells serving to forget it in the model's stored history too."""
    lock = select(ratings.c.rating).where(ratings.c.user_id == user_id, ratings.c.movie_id == movie_id)
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        lock = lock.with_for_update()
    old = (await session.execute(lock)).scalar_one_or_none()
    if old is None:
        raise NotFound(f"you have not rated movie {movie_id}")
    await session.execute(
        ratings.delete().where(ratings.c.user_id == user_id, ratings.c.movie_id == movie_id)
    )
    await session.execute(without_rating(movie_id, old))
    now = int(time.time())
    await session.execute(
        dialect_insert(session)(deleted_ratings)
        .values(user_id=user_id, movie_id=movie_id, deleted_at=now)
        .on_conflict_do_update(index_elements=["user_id", "movie_id"], set_={"deleted_at": now})
    )
    await session.commit()


async def dismiss(*, session: AsyncSession, user_id: int, movie_id: int, dismissed: bool) -> bool:
    """Dismiss (or take back the dismissal of) a movie; True when that changed anything."""
    await _movie_exists(session, movie_id, "movieId")
    if dismissed:
        result = await session.execute(
            dialect_insert(session)(dismissals)
            .values(user_id=user_id, movie_id=movie_id, dismissed_at=int(time.time()))
            .on_conflict_do_nothing(index_elements=["user_id", "movie_id"])
        )
    else:
        result = await session.execute(
            dismissals.delete().where(dismissals.c.user_id == user_id, dismissals.c.movie_id == movie_id)
        )
    await session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


USER = Kind("user", 60, False, keep=lambda row: row is not None)  # who exists (erasure bumps the generation)


class UserService(CachedReads):
    """Users by id, through this process's cache (concurrent requests' misses are one
    statement; only found rows are kept, under the user's generation, which an erasure bumps),
    their ratings, and rating a movie, which makes stale whatever was cached of the user and
    the movie, on every replica."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], cache: TwoLevelCache, generations: Generations
    ) -> None:
        super().__init__(sessions, cache, generations)
        self._reads: Coalescer[int, Row[Any] | None] = Coalescer(self._read)

    async def _read(self, user_ids: list[int]) -> dict[int, Row[Any] | None]:
        async with self.sessions() as session:
            found = await users_by_ids(session=session, user_ids=user_ids)
        return {u: found.get(u) for u in user_ids}

    async def users(self, user_ids: Sequence[int]) -> list[Row[Any] | None]:
        async def fetch(missing: list[int]) -> dict[int, Row[Any] | None]:
            return dict(zip(missing, await self._reads.get_many(missing), strict=True))

        # keyed by the user's generation: an erased user is gone at once, on every replica
        gens = await self.generations.get("user", list(dict.fromkeys(user_ids)))
        return await self.cache.get_many(USER, user_ids, lambda u: f"{u}:{gens[u]}", fetch)

    async def ratings_counts(self, user_ids: Sequence[int]) -> list[int]:
        ids = list(dict.fromkeys(user_ids))
        async with self.sessions() as session:
            found = await ratings_count_by_user_ids(session=session, user_ids=ids)
        return [found.get(u, 0) for u in user_ids]

    async def own_ratings(self, keys: Sequence[tuple[int, int]]) -> list[float | None]:
        """Each (user, movie)'s rating, None where that user has not rated that movie: one
        statement for a request's keys."""
        users_of: dict[int, set[int]] = {}
        for user_id, movie_id in keys:
            users_of.setdefault(user_id, set()).add(movie_id)
        wanted = or_(
            *(
                and_(ratings.c.user_id == user, ratings.c.movie_id.in_(sorted(movies)))
                for user, movies in users_of.items()
            )
        )
        stmt = select(ratings.c.user_id, ratings.c.movie_id, ratings.c.rating).where(wanted)
        async with self.sessions() as session:
            found = {(u, m): float(r) for u, m, r in (await session.execute(stmt)).all()}
        return [found.get(key) for key in keys]

    async def ratings(self, user_id: int, *, after: tuple[int, int] | None, limit: int) -> RatingPage:
        """A page of the user's ratings, newest first, after a keyset position (timestamp, movie)."""
        async with self.sessions() as session:
            return await ratings_page(session=session, user_id=user_id, after=after, limit=limit)

    async def rate(self, *, user_id: int, movie_id: int, rating: float) -> RatingRow:
        async with self.sessions() as session:
            row = await rate_movie(session=session, user_id=user_id, movie_id=movie_id, rating=rating)
        # Everything cached about this user (history, recommendations, explanations) and this
        # movie (its rating statistics) is stale now, on every replica.
        await self.generations.bump("user", user_id)
        await self.generations.bump("movie", movie_id)
        return row

    async def delete_rating(self, *, user_id: int, movie_id: int) -> None:
        async with self.sessions() as session:
            await delete_rating(session=session, user_id=user_id, movie_id=movie_id)
        await self.generations.bump("user", user_id)
        await self.generations.bump("movie", movie_id)

    async def dismissed(self, user_id: int, *, limit: int) -> list[int]:
        """The movies the user said 'Not interested' to, newest first."""
        stmt = (
            select(dismissals.c.movie_id)
            .where(dismissals.c.user_id == user_id)
            .order_by(dismissals.c.dismissed_at.desc(), dismissals.c.movie_id.asc())
            .limit(limit)
        )
        async with self.sessions() as session:
            return list((await session.execute(stmt)).scalars())

    async def dismiss(self, *, user_id: int, movie_id: int, dismissed: bool = True) -> bool:
        """Never recommend ``movie_id`` to the user again (and count it as taste against), or
        take that back; their cached recommendations are stale at once, on every replica."""
        async with self.sessions() as session:
            changed = await dismiss(session=session, user_id=user_id, movie_id=movie_id, dismissed=dismissed)
        if changed:
            await self.generations.bump("user", user_id)
        return changed
