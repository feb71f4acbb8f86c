"""A catalog that changes while serving: movies added, updated and retired by an admin.

A new movie gets its content embedding at once (stored, so every replica reads it rather
than encoding it again): it is searchable, similar and recommendable by content before any
retraining. A retired movie keeps its ratings and leaves every list. Either moves the
catalog's generation, which every replica hears: their caches of lists, search results
and filter facts are keyed by it.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from app.infra.errors import BadUserInput, NotFound
from app.infra.tables import (
    genres,
    links,
    movie_genres,
    movies,
    tags,
)
from app.infra.tables import movie_embeddings as vectors
from ml import embeddings
from ml.interactions import content_text

if TYPE_CHECKING:
    from sqlalchemy import Row
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from app.infra.cache import Generations


MAX_GENRES, MAX_TAGS = 10, 20
# Characters that reorder or hide the text around them where a title is shown (U+202E turns
# "gnp.exe" round), and other invisible formatting: refused in what admins write.
_CONTROLS = re.compile("[\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def _readable(text: str) -> bool:
    return _CONTROLS.search(text) is None


@dataclass(frozen=True)
class MovieDraft:
    """What an admin says of a movie (None: leave as it is, when updating)."""

    title: str | None = None
    year: int | None = None
    genres: tuple[str, ...] | None = None
    tags: tuple[str, ...] | None = None
    imdb_id: str | None = None
    tmdb_id: int | None = None

    def check(self, prefix: str) -> None:
        if self.title is not None and not 1 <= len(self.title.strip()) <= 300:
            raise BadUserInput("a title is 1 to 300 characters", field=f"{prefix}.title")
        for field, texts in (
            ("title", [self.title or ""]),
            ("genres", self.genres or ()),
            ("tags", self.tags or ()),
        ):
            if not all(_readable(t) for t in texts):
                raise BadUserInput(
                    f"{field} may not hold control or bidirectional formatting characters (such as U+202E)",
                    field=f"{prefix}.{field}",
                )
        if self.year is not None and not 1870 <= self.year <= 2100:
            raise BadUserInput("year must be between 1870 and 2100", field=f"{prefix}.year")
        if self.genres is not None and (
            not 1 <= len(self.genres) <= MAX_GENRES or any(not 1 <= len(g.strip()) <= 40 for g in self.genres)
        ):
            raise BadUserInput(f"1 to {MAX_GENRES} genres of 1 to 40 characters", field=f"{prefix}.genres")
        if self.tags is not None and (
            len(self.tags) > MAX_TAGS or any(not 1 <= len(t.strip()) <= 100 for t in self.tags)
        ):
            raise BadUserInput(f"at most {MAX_TAGS} tags of 1 to 100 characters", field=f"{prefix}.tags")
        if self.imdb_id is not None and not (
            self.imdb_id.isascii() and self.imdb_id.isdigit() and len(self.imdb_id) <= 10
        ):
            raise BadUserInput("an IMDb id is 1 to 10 ASCII digits (0-9)", field=f"{prefix}.imdbId")
        if self.tmdb_id is not None and self.tmdb_id <= 0:
            raise BadUserInput("a TMDb id is positive", field=f"{prefix}.tmdbId")


class CatalogChanges:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], generations: Generations) -> None:
        self.sessions = sessions
        self.generations = generations

    async def add(self, draft: MovieDraft, *, by_user: int) -> int:
        """A new movie, numbered above every other; its content embedded now. Returns its id."""
        if draft.title is None or draft.genres is None:
            raise BadUserInput("a new movie needs a title and its genres", field="movie.title")
        draft.check("movie")
        vector = await self._embed(
            draft.title.strip(), draft.year, list(draft.genres), list(draft.tags or ())
        )
        for attempt in range(3):  # two admins adding at once: the second takes the next number
            async with self.sessions() as session:
                top = (
                    await session.execute(select(func.coalesce(func.max(movies.c.movie_id), 0)))
                ).scalar_one()
                movie_id = int(top) + 1
                try:
                    await session.execute(
                        movies.insert().values(
                            movie_id=movie_id,
                            title=draft.title.strip(),
                            year=draft.year,
                            added_at=int(time.time()),
                        )
                    )
                    await self._write(session, movie_id, draft, by_user=by_user)
                    await session.execute(vectors.insert().values(movie_id=movie_id, vector=vector.tobytes()))
                    await session.commit()
                except IntegrityError:
                    await session.rollback()
                    if attempt == 2:
                        raise BadUserInput("the movie could not be added: try again") from None
                    continue
            break
        await self._changed(movie_id)
        return movie_id

    async def update(self, movie_id: int, draft: MovieDraft, *, by_user: int) -> None:
        draft.check("patch")
        async with self.sessions() as session:
            row = await self._row(session, movie_id)
            values = {k: v for k, v in (("title", draft.title), ("year", draft.year)) if v is not None}
            if values:
                await session.execute(update(movies).where(movies.c.movie_id == movie_id).values(**values))
            await self._write(session, movie_id, draft, by_user=by_user)
            if row.added_at is not None:  # added while serving: its embedding follows its content
                title = draft.title.strip() if draft.title else row.title
                year = draft.year if draft.year is not None else row.year
                names = (
                    list(draft.genres) if draft.genres is not None else await self._genres(session, movie_id)
                )
                tag_list = list(draft.tags) if draft.tags is not None else await self._tags(session, movie_id)
                vector = await self._embed(title, year, names, tag_list)
                await session.execute(delete(vectors).where(vectors.c.movie_id == movie_id))
                await session.execute(vectors.insert().values(movie_id=movie_id, vector=vector.tobytes()))
            await session.commit()
        await self._changed(movie_id)

    async def retire(self, movie_id: int) -> None:
        """Out of every list, on every replica; its ratings stay."""
        async with self.sessions() as session:
            await self._row(session, movie_id)
            await session.execute(update(movies).where(movies.c.movie_id == movie_id).values(retired=True))
            await session.commit()
        await self._changed(movie_id)

    async def _changed(self, movie_id: int) -> None:
        await self.generations.bump("movie", movie_id)  # its row, genres, tags and links
        await self.generations.bump("catalog", 0)  # every list, search and filter fact

    @staticmethod
    async def _row(session: AsyncSession, movie_id: int) -> Row:
        row = (await session.execute(select(movies).where(movies.c.movie_id == movie_id))).first()
        if row is None:
            raise NotFound(f"movie {movie_id} does not exist")
        return row

    @staticmethod
    async def _embed(title: str, year: int | None, names: list[str], tag_list: list[str]) -> np.ndarray:
        text = content_text(title, year, names, tag_list)
        return np.asarray((await asyncio.to_thread(embeddings.encode, [text]))[0], dtype=np.float32)

    @staticmethod
    async def _genres(session: AsyncSession, movie_id: int) -> list[str]:
        stmt = (
            select(genres.c.name)
            .join(movie_genres, movie_genres.c.genre_id == genres.c.genre_id)
            .where(movie_genres.c.movie_id == movie_id)
        )
        return list((await session.execute(stmt)).scalars())

    @staticmethod
    async def _tags(session: AsyncSession, movie_id: int) -> list[str]:
        return list((await session.execute(select(tags.c.tag).where(tags.c.movie_id == movie_id))).scalars())

    @staticmethod
    async def _write(session: AsyncSession, movie_id: int, draft: MovieDraft, *, by_user: int) -> None:
        """Genres, tags and links as the draft says (genres new to the catalog are created)."""
        if draft.genres is not None:
            names = list(dict.fromkeys(g.strip() for g in draft.genres))
            known = {
                name.lower(): genre_id
                for genre_id, name in (await session.execute(select(genres.c.genre_id, genres.c.name))).all()
            }
            for name in names:
                if name.lower() not in known:
                    known[name.lower()] = (
                        await session.execute(genres.insert().values(name=name).returning(genres.c.genre_id))
                    ).scalar_one()
            await session.execute(delete(movie_genres).where(movie_genres.c.movie_id == movie_id))
            await session.execute(
                movie_genres.insert(), [{"movie_id": movie_id, "genre_id": known[n.lower()]} for n in names]
            )
        if draft.tags is not None:
            await session.execute(delete(tags).where(tags.c.movie_id == movie_id, tags.c.user_id == by_user))
            now = int(time.time())
            unique = dict.fromkeys(t.strip() for t in draft.tags)
            rows = [{"user_id": by_user, "movie_id": movie_id, "tag": t, "timestamp": now} for t in unique]
            if rows:
                await session.execute(tags.insert(), rows)
        if draft.imdb_id is not None or draft.tmdb_id is not None:
            existing = (await session.execute(select(links).where(links.c.movie_id == movie_id))).first()
            values = {
                k: v for k, v in (("imdb_id", draft.imdb_id), ("tmdb_id", draft.tmdb_id)) if v is not None
            }
            if existing is None:
                await session.execute(links.insert().values(movie_id=movie_id, **values))
            else:
                await session.execute(update(links).where(links.c.movie_id == movie_id).values(**values))
