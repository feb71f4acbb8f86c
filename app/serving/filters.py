"""Recommendation filters, tested on the whole score vector before the top is taken.

A filter becomes one boolean per column of the serving model from ``ItemFacts``: genres as a
sparse movie x genre matrix (any number of genres), year, rating count and retirement, read
once per (model version, catalog generation) and refreshed every few minutes for rating counts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
from sqlalchemy import select

from app.infra.errors import BadUserInput
from app.infra.tables import genres, movie_genres, movies

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.ext.asyncio import AsyncSession

MAX_EXCLUDED = 1000  # movie ids one filter may exclude


@dataclass(frozen=True)
class RecFilter:
    """What a recommendation must be: any of ``any_genres``, all of ``all_genres``, released in
    ``year_from``..``year_to``, rated by at least ``min_ratings`` users, not one of ``exclude``;
    dismissed movies stay out unless ``include_dismissed``."""

    any_genres: tuple[str, ...] = ()
    all_genres: tuple[str, ...] = ()
    year_from: int | None = None
    year_to: int | None = None
    min_ratings: int | None = None
    exclude: tuple[int, ...] = ()
    include_dismissed: bool = False

    def __post_init__(self) -> None:
        if self.year_from is not None and self.year_to is not None and self.year_from > self.year_to:
            raise BadUserInput(
                f"yearFrom {self.year_from} is after yearTo {self.year_to}", field="filter.yearFrom"
            )
        if self.min_ratings is not None and self.min_ratings < 0:
            raise BadUserInput("minRatings must be 0 or more", field="filter.minRatings")
        if len(self.exclude) > MAX_EXCLUDED:
            raise BadUserInput(f"at most {MAX_EXCLUDED} excluded movies", field="filter.excludeMovieIds")

    @property
    def narrows(self) -> bool:
        """Whether it removes anything besides what every request removes."""
        return self != RecFilter(include_dismissed=self.include_dismissed)

    def digest(self) -> str:
        """A short, stable name of the filter (cache keys, cursors)."""
        canonical = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


NO_FILTER = RecFilter()


@dataclass(frozen=True)
class ItemFacts:
    """What filters test, one entry per column of a model (aligned with its ``item_ids``)."""

    genre_columns: dict[str, int]  # genre name in lower case -> its column in ``genres``
    genres: sp.csr_matrix  # (n_items, n_genres) bool: the movie's genres, however many exist
    year: np.ndarray  # int32: -1 when unknown
    ratings: np.ndarray  # int32: raters
    # bool: retired, or the second id of a title and year another id holds (ML-100K lists 18
    # titles twice): never recommended, searched or listed as similar, so no page shows one twice
    hidden: np.ndarray

    def _columns(self, names: Sequence[str], field: str) -> list[int]:
        columns = []
        for name in names:
            column = self.genre_columns.get(name.strip().lower())
            if column is None:
                raise BadUserInput(f"unknown genre {name!r}", field=field)
            columns.append(column)
        return columns

    def _count(self, columns: list[int]) -> np.ndarray:
        """How many of ``columns``' genres each movie has."""
        return np.asarray(self.genres[:, sorted(set(columns))].sum(axis=1)).ravel()

    def allowed(self, f: RecFilter, item_index: np.ndarray | None = None) -> np.ndarray:
        """One boolean per column: may it be recommended under ``f``? Hidden movies (retired,
        twins) never are; ``item_index`` maps ``f.exclude``'s movie ids to columns."""
        keep = ~self.hidden
        if f.any_genres:
            keep &= self._count(self._columns(f.any_genres, "filter.anyGenres")) > 0
        if f.all_genres:
            every = sorted(set(self._columns(f.all_genres, "filter.allGenres")))
            keep &= self._count(every) == len(every)
        if f.year_from is not None:
            keep &= self.year >= f.year_from
        if f.year_to is not None:
            keep &= (self.year <= f.year_to) & (self.year >= 0)
        if f.min_ratings:
            keep &= self.ratings >= f.min_ratings
        if f.exclude and item_index is not None:
            columns = item_index[item_index >= 0]
            keep[columns] = False
        return keep


def shadowed(rows: Sequence[Any]) -> set[int]:
    """The ids whose (title, year) a live movie with more ratings (or as many, and a lower id)
    holds too: one movie listed twice in the catalog is shown once, as the better-known id."""
    seen: set[tuple[str, int | None]] = set()
    hidden: set[int] = set()
    for row in sorted(rows, key=lambda r: (-r.ratings_count, r.movie_id)):
        if row.retired:
            continue
        key = (" ".join(row.title.lower().split()), row.year)
        if key in seen:
            hidden.add(row.movie_id)
        seen.add(key)
    return hidden


async def read_item_facts(session: AsyncSession, item_ids: np.ndarray) -> ItemFacts:
    """The facts of ``item_ids`` (a model's columns, sorted) from the catalog."""
    n = len(item_ids)
    year = np.full(n, -1, dtype=np.int32)
    ratings = np.zeros(n, dtype=np.int32)
    hidden = np.zeros(n, dtype=bool)
    rows = (
        await session.execute(
            select(movies.c.movie_id, movies.c.title, movies.c.year, movies.c.ratings_count, movies.c.retired)
        )
    ).all()
    twins = shadowed(rows)
    if rows:
        ids = np.array([r.movie_id for r in rows], dtype=np.int64)
        pos = np.searchsorted(item_ids, ids).clip(0, max(n - 1, 0))
        found = item_ids[pos] == ids if n else np.zeros(len(ids), dtype=bool)
        year[pos[found]] = np.array([r.year if r.year is not None else -1 for r in rows], dtype=np.int32)[
            found
        ]
        ratings[pos[found]] = np.array([r.ratings_count for r in rows], dtype=np.int32)[found]
        gone = [bool(r.retired) or r.movie_id in twins for r in rows]
        hidden[pos[found]] = np.array(gone, dtype=bool)[found]
    names = (
        await session.execute(select(genres.c.genre_id, genres.c.name).order_by(genres.c.genre_id))
    ).all()
    genre_columns: dict[str, int] = {}
    column_of: dict[int, int] = {}
    for genre_id, name in names:  # names differing only in case share a column
        column_of[genre_id] = genre_columns.setdefault(name.lower(), len(genre_columns))
    pairs = (await session.execute(select(movie_genres.c.movie_id, movie_genres.c.genre_id))).all()
    matrix = sp.csr_matrix((n, len(genre_columns)), dtype=bool)
    if pairs and n:
        ids = np.array([m for m, _ in pairs], dtype=np.int64)
        columns = np.array([column_of.get(g, -1) for _, g in pairs], dtype=np.int64)
        pos = np.searchsorted(item_ids, ids).clip(0, n - 1)
        found = (item_ids[pos] == ids) & (columns >= 0)
        matrix = sp.csr_matrix(
            (np.ones(int(found.sum()), dtype=bool), (pos[found], columns[found])),
            shape=(n, len(genre_columns)),
        )
    return ItemFacts(genre_columns, matrix, year, ratings, hidden)
