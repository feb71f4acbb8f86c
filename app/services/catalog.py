"""Catalog reads: movies by key, their genres, tags and links, and filtered, ordered pages.

Every function takes keys in bulk so that per-request dataloaders issue one statement
per batch. Pages use keyset pagination: the position is (sort value, movie_id).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, literal_column, or_, select

from app.infra.cache import GENRE_NAMES, GENRES, LINK, MOVIE, TAGS
from app.infra.tables import genres, links, movie_genres, movies, tags
from app.serving.parts import CachedReads

if TYPE_CHECKING:
    from sqlalchemy import ColumnElement, Row
    from sqlalchemy.ext.asyncio import AsyncSession


log = logging.getLogger(__name__)
WARM_PAGE = 2000  # movies read into the cache at a time


class MovieSort(Enum):
    POPULARITY = "popularity"
    AVERAGE_RATING = "average_rating"
    YEAR = "year"
    TITLE = "title"


# Natural direction of each order: most popular, best rated, newest first; titles A to Z.
_DESCENDING = {
    MovieSort.POPULARITY: True,
    MovieSort.AVERAGE_RATING: True,
    MovieSort.YEAR: True,
    MovieSort.TITLE: False,
}


# "Best rated" is the mean shrunk toward PRIOR_MEAN as if every movie had PRIOR_WEIGHT more
# ratings of it (a Bayesian average): two ratings of 5 do not outrank 400 ratings of 4.4.
# A constant prior, not the catalog's moving mean, so that a page's keyset position means
# the same on the next page. MovieLens's mean rating is about 3.5.
PRIOR_MEAN = 3.5
PRIOR_WEIGHT = 10


def shrunk_mean() -> ColumnElement[Any]:
    return (movies.c.rating_sum + PRIOR_MEAN * PRIOR_WEIGHT) / (movies.c.ratings_count + PRIOR_WEIGHT)


def _sort_column(sort: MovieSort) -> ColumnElement[Any]:
    return {
        MovieSort.POPULARITY: movies.c.ratings_count,
        MovieSort.AVERAGE_RATING: shrunk_mean(),
        MovieSort.YEAR: func.coalesce(movies.c.year, 0),
        MovieSort.TITLE: movies.c.title,
    }[sort]


@dataclass(frozen=True)
class MovieQuery:
    genre: str | None = None
    year_from: int | None = None
    year_to: int | None = None
    title_contains: str | None = None
    min_ratings: int | None = None


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _conditions(query: MovieQuery) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if query.genre is not None:
        where.append(
            movies.c.movie_id.in_(
                select(movie_genres.c.movie_id)
                .join(genres, genres.c.genre_id == movie_genres.c.genre_id)
                .where(func.lower(genres.c.name) == query.genre.lower())
            )
        )
    if query.year_from is not None:
        where.append(movies.c.year >= query.year_from)
    if query.year_to is not None:
        where.append(movies.c.year <= query.year_to)
    if query.title_contains:
        pattern = f"%{_escape_like(query.title_contains.lower())}%"
        where.append(func.lower(movies.c.title).like(pattern, escape="\\"))
    if query.min_ratings is not None:
        where.append(movies.c.ratings_count >= query.min_ratings)
    return where


async def movies_by_ids(*, session: AsyncSession, movie_ids: Sequence[int]) -> dict[int, Row[Any]]:
    rows = (await session.execute(select(movies).where(movies.c.movie_id.in_(movie_ids)))).all()
    return {row.movie_id: row for row in rows}


async def all_titles(*, session: AsyncSession) -> list[str]:
    """Every movie's title, as stored (for finding titles in text)."""
    return list((await session.execute(select(movies.c.title))).scalars())


async def movies_after(*, session: AsyncSession, after: int | None, limit: int) -> list[Row[Any]]:
    """Up to ``limit`` movies with ids above ``after``, in id order (for walking the catalog)."""
    stmt = select(movies).order_by(movies.c.movie_id).limit(limit)
    if after is not None:
        stmt = stmt.where(movies.c.movie_id > after)
    return list((await session.execute(stmt)).all())


async def genres_by_movie_ids(*, session: AsyncSession, movie_ids: Sequence[int]) -> dict[int, list[str]]:
    stmt = (
        select(movie_genres.c.movie_id, genres.c.name)
        .join(genres, genres.c.genre_id == movie_genres.c.genre_id)
        .where(movie_genres.c.movie_id.in_(movie_ids))
        .order_by(movie_genres.c.movie_id, genres.c.name)
    )
    out: dict[int, list[str]] = defaultdict(list)
    for movie_id, name in (await session.execute(stmt)).all():
        out[movie_id].append(name)
    return out


async def tags_by_movie_ids(
    *, session: AsyncSession, movie_ids: Sequence[int], first: int
) -> dict[int, list[str]]:
    """Up to ``first`` distinct tags per movie, most used first (one statement for all movies)."""
    uses = func.count().label("uses")
    counted = (
        select(tags.c.movie_id, tags.c.tag, uses)
        .where(tags.c.movie_id.in_(movie_ids))
        .group_by(tags.c.movie_id, tags.c.tag)
        .subquery()
    )
    rank = (
        func.row_number()
        .over(partition_by=counted.c.movie_id, order_by=(counted.c.uses.desc(), counted.c.tag))
        .label("rank")
    )
    ranked = select(counted.c.movie_id, counted.c.tag, rank).subquery()
    stmt = (
        select(ranked.c.movie_id, ranked.c.tag)
        .where(ranked.c.rank <= first)
        .order_by(ranked.c.movie_id, ranked.c.rank)
    )
    out: dict[int, list[str]] = defaultdict(list)
    for movie_id, tag in (await session.execute(stmt)).all():
        out[movie_id].append(tag)
    return out


async def links_by_movie_ids(*, session: AsyncSession, movie_ids: Sequence[int]) -> dict[int, Row[Any]]:
    rows = (await session.execute(select(links).where(links.c.movie_id.in_(movie_ids)))).all()
    return {row.movie_id: row for row in rows}


@dataclass(frozen=True)
class MoviePage:
    rows: list[Row[Any]]
    has_next: bool
    sort_values: list[Any]


async def movie_page(
    *,
    session: AsyncSession,
    query: MovieQuery,
    sort: MovieSort,
    descending: bool | None,
    after: tuple[Any, int] | None,
    limit: int,
) -> MoviePage:
    """Up to ``limit`` movies after the keyset position ``after`` = (sort value, movie_id)."""
    desc = _DESCENDING[sort] if descending is None else descending
    key = _sort_column(sort)
    where = _conditions(query)
    if after is not None:
        value, movie_id = after
        beyond = key < value if desc else key > value
        where.append(or_(beyond, and_(key == value, movies.c.movie_id > movie_id)))
    stmt = (
        select(movies, key.label("sort_value"))
        .where(*where)
        .order_by(key.desc() if desc else key.asc(), movies.c.movie_id.asc())
        .limit(limit + 1)
    )
    rows = list((await session.execute(stmt)).all())
    return MoviePage(rows[:limit], len(rows) > limit, [r.sort_value for r in rows[:limit]])


async def count_movies(*, session: AsyncSession, query: MovieQuery) -> int:
    stmt = select(func.count(literal_column("1"))).select_from(movies).where(*_conditions(query))
    return int((await session.execute(stmt)).scalar_one())


async def genre_names(*, session: AsyncSession) -> list[str]:
    return list((await session.execute(select(genres.c.name).order_by(genres.c.name))).scalars())


class CatalogService(CachedReads):
    """Catalog reads by key, in bulk, through the two cache levels (one statement per kind
    for whatever is not cached). A movie's row is keyed by its generation: ``rateMovie``
    bumps it, so its rating statistics are fresh on every replica at once."""

    async def movies(self, movie_ids: Sequence[int]) -> list[Row[Any] | None]:
        gens = await self.generations.get("movie", movie_ids)

        async def fetch(ids: list[int]) -> dict[int, Row[Any]]:
            async with self.sessions() as session:
                return await movies_by_ids(session=session, movie_ids=ids)

        return await self.cache.get_many(MOVIE, movie_ids, lambda m: f"{m}:{gens[m]}", fetch)

    async def page(
        self,
        query: MovieQuery,
        *,
        sort: MovieSort,
        descending: bool | None,
        after: tuple[Any, int] | None,
        limit: int,
    ) -> MoviePage:
        """A page of the movies matching ``query``, in ``sort`` order, after a keyset position."""
        async with self.sessions() as session:
            return await movie_page(
                session=session, query=query, sort=sort, descending=descending, after=after, limit=limit
            )

    async def count(self, query: MovieQuery) -> int:
        async with self.sessions() as session:
            return await count_movies(session=session, query=query)

    async def genre_names(self) -> list[str]:
        """Every genre name, through the cache (keyed by the catalog's generation, which an
        ingest moves): one statement for any number of readers at once."""
        generation = (await self.generations.get("catalog", [0]))[0]

        async def fetch(_: list[int]) -> dict[int, list[str]]:
            async with self.sessions() as session:
                return {0: await genre_names(session=session)}

        [names] = await self.cache.get_many(GENRE_NAMES, [0], lambda _: str(generation), fetch, default=[])
        return list(names)

    async def genres(self, movie_ids: Sequence[int]) -> list[list[str]]:
        async def fetch(ids: list[int]) -> dict[int, list[str]]:
            async with self.sessions() as session:
                return await genres_by_movie_ids(session=session, movie_ids=ids)

        gens = await self.generations.get("movie", movie_ids)  # an update moves it
        return await self.cache.get_many(GENRES, movie_ids, lambda m: f"{m}:{gens[m]}", fetch, default=[])

    async def links(self, movie_ids: Sequence[int]) -> list[Row[Any] | None]:
        async def fetch(ids: list[int]) -> dict[int, Row[Any]]:
            async with self.sessions() as session:
                return await links_by_movie_ids(session=session, movie_ids=ids)

        gens = await self.generations.get("movie", movie_ids)
        return await self.cache.get_many(LINK, movie_ids, lambda m: f"{m}:{gens[m]}", fetch)

    async def tags(self, keys: Sequence[tuple[int, int]]) -> list[list[str]]:
        """Tags per (movie, first): up to ``first`` of them, most used first."""

        async def fetch(wanted: list[tuple[int, int]]) -> dict[tuple[int, int], list[str]]:
            by_first: dict[int, list[int]] = {}
            for movie_id, first in wanted:
                by_first.setdefault(first, []).append(movie_id)
            found: dict[tuple[int, int], list[str]] = {}
            async with self.sessions() as session:
                for first, movie_ids in by_first.items():
                    tags = await tags_by_movie_ids(session=session, movie_ids=movie_ids, first=first)
                    found.update({(m, first): tags.get(m, []) for m in movie_ids})
            return found

        gens = await self.generations.get("movie", [m for m, _ in keys])
        return await self.cache.get_many(
            TAGS, keys, lambda k: f"{k[0]}:{k[1]}:{gens[k[0]]}", fetch, default=[]
        )

    async def warm(self, *, limit: int) -> int:
        """Load up to ``limit`` movies and their genres into this process's L1, a page at a
        time, yielding to the event loop between pages so that serving never stalls on it.
        Movies are keyed by their generation 0: a movie rated since is read through (its
        generation moved)."""
        loaded, after = 0, None
        while loaded < limit:
            async with self.sessions() as session:
                rows = await movies_after(session=session, after=after, limit=min(WARM_PAGE, limit - loaded))
                if not rows:
                    break
                ids = [r.movie_id for r in rows]
                genres = await genres_by_movie_ids(session=session, movie_ids=ids)
            for r in rows:
                self.cache.put(MOVIE, f"{r.movie_id}:0", r)
                self.cache.put(GENRES, f"{r.movie_id}:0", genres.get(r.movie_id, []))
            loaded, after = loaded + len(rows), ids[-1]
            await asyncio.sleep(0)
        return loaded

    async def keep_warm(self, *, every: float, limit: int) -> None:
        """Re-warm the catalog every ``every`` seconds (entries expire after their TTL)."""
        while True:
            await asyncio.sleep(every)
            try:
                log.info("catalog cache refreshed: %d movies", await self.warm(limit=limit))
            except Exception:  # a failed refresh leaves reads to go through to the database
                log.exception("catalog cache refresh failed")
