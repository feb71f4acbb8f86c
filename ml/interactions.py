"""Ratings and catalog as index-aligned arrays: the input every model takes.

Public MovieLens ids map to dense indices by position in the sorted id arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp


@dataclass
class Catalog:
    """Item side data, aligned with ``item_ids`` (sorted public movie ids)."""

    item_ids: np.ndarray
    titles: list[str]
    years: np.ndarray  # 0 where unknown
    genres: list[list[str]]
    tags: list[list[str]] = field(default_factory=list)
    genome: list[list[tuple[str, float]]] = field(default_factory=list)  # most relevant genome tags

    @classmethod
    def from_frames(
        cls,
        movies: pd.DataFrame,
        genres: pd.DataFrame,
        tags: pd.DataFrame | None = None,
        genome: pd.DataFrame | None = None,
    ) -> Catalog:
        """movies: movie_id, title, year; genres: movie_id, name; tags: movie_id, tag (most used first);
        genome: movie_id, tag, relevance (most relevant first)."""
        movies = movies.sort_values("movie_id")
        ids = movies["movie_id"].to_numpy(dtype=np.int64)
        by_movie = genres.groupby("movie_id")["name"].apply(list).to_dict()
        tag_map = (
            tags.groupby("movie_id")["tag"].apply(list).to_dict() if tags is not None and len(tags) else {}
        )
        return cls(
            item_ids=ids,
            titles=movies["title"].astype(str).tolist(),
            years=movies["year"].fillna(0).to_numpy(dtype=np.int64),
            genres=[by_movie.get(int(i), []) for i in ids],
            tags=[tag_map.get(int(i), []) for i in ids],
            genome=_genome_lists(genome, ids),
        )

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def index(self, movie_ids: np.ndarray | list[int]) -> np.ndarray:
        """Dense indices of ``movie_ids``; -1 for ids not in the catalog."""
        ids = np.asarray(movie_ids, dtype=np.int64)
        pos = np.searchsorted(self.item_ids, ids).clip(0, max(self.n_items - 1, 0))
        return np.where(self.item_ids[pos] == ids, pos, -1) if self.n_items else np.full(len(ids), -1)

    def genre_matrix(self) -> tuple[sp.csr_matrix, list[str]]:
        """(n_items, n_genres) 0/1 indicators and the genre names."""
        names = sorted({g for gs in self.genres for g in gs})
        col = {g: j for j, g in enumerate(names)}
        rows = [i for i, gs in enumerate(self.genres) for _ in gs]
        cols = [col[g] for gs in self.genres for g in gs]
        matrix = sp.csr_matrix(
            (np.ones(len(rows), np.float32), (rows, cols)), shape=(self.n_items, len(names))
        )
        return matrix, names

    def text(self, i: int) -> str:
        """What the content embedding reads for item ``i``."""
        return content_text(
            self.titles[i], int(self.years[i]) or None, self.genres[i], self.tags[i] if self.tags else []
        )


def content_text(title: str, year: int | None, genres: list[str], tags: list[str]) -> str:
    """What the content embedding reads for a movie: training's catalog and a movie added while
    serving both read it this way."""
    parts = [title + (f" ({year})" if year else "")]
    if genres:
        parts.append("Genres: " + ", ".join(genres))
    if tags:
        parts.append("Tags: " + ", ".join(tags[:10]))
    return ". ".join(parts)


def _genome_lists(genome: pd.DataFrame | None, ids: np.ndarray) -> list[list[tuple[str, float]]]:
    if genome is None or genome.empty:
        return []
    pairs = {
        int(m): list(zip(g["tag"], g["relevance"].astype(float), strict=True))
        for m, g in genome.groupby("movie_id")
    }
    return [pairs.get(int(i), []) for i in ids]


@dataclass
class Interactions:
    """A (n_users, n_items) sparse rating matrix with the public user ids of its rows."""

    user_ids: np.ndarray
    matrix: sp.csr_matrix

    @classmethod
    def from_frame(
        cls, ratings: pd.DataFrame, catalog: Catalog, user_ids: np.ndarray | None = None
    ) -> Interactions:
        """ratings: user_id, movie_id, rating. Rows for movies outside the catalog are dropped."""
        users = np.unique(ratings["user_id"].to_numpy()) if user_ids is None else np.asarray(user_ids)
        items = catalog.index(ratings["movie_id"].to_numpy())
        rows = np.searchsorted(users, ratings["user_id"].to_numpy())
        keep = (items >= 0) & (rows < len(users))
        keep[keep] &= users[rows[keep]] == ratings["user_id"].to_numpy()[keep]
        matrix = sp.csr_matrix(
            (ratings["rating"].to_numpy(np.float32)[keep], (rows[keep], items[keep])),
            shape=(len(users), catalog.n_items),
        )
        matrix.sum_duplicates()
        return cls(users.astype(np.int64), matrix)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    def user_index(self, user_ids: np.ndarray | list[int]) -> np.ndarray:
        ids = np.asarray(user_ids, dtype=np.int64)
        if not self.n_users:
            return np.full(len(ids), -1)
        pos = np.searchsorted(self.user_ids, ids).clip(0, self.n_users - 1)
        return np.where(self.user_ids[pos] == ids, pos, -1)


def stratified_split(
    ratings: pd.DataFrame, ratio: float = 0.75, seed: int = 42
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-user random split: each user's ratings are shuffled and the first round(ratio * n) train.

    The protocol of Microsoft Recommenders' ``python_stratified_split``.
    """
    rng = np.random.default_rng(seed)
    shuffled = ratings.iloc[rng.permutation(len(ratings))]
    rank = shuffled.groupby("user_id").cumcount().to_numpy()
    size = shuffled.groupby("user_id")["user_id"].transform("size").to_numpy()
    train = rank < np.round(size * ratio)
    return shuffled[train].reset_index(drop=True), shuffled[~train].reset_index(drop=True)


def truncate(history: sp.csr_matrix, keep: int, seed: int) -> sp.csr_matrix:
    """Each row cut to ``keep`` of its ratings, drawn at random (seeded)."""
    rng = np.random.default_rng(seed)
    rows = history.tolil(copy=True)
    for i in range(rows.shape[0]):
        cols = rows.rows[i]
        if len(cols) > keep:
            chosen = set(rng.choice(len(cols), size=keep, replace=False).tolist())
            rows.rows[i] = [c for j, c in enumerate(cols) if j in chosen]
            rows.data[i] = [v for j, v in enumerate(rows.data[i]) if j in chosen]
    return rows.tocsr()
