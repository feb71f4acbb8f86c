"""Recommendations for a batch of users: one SQL read of their ratings, one scoring call.

Scoring reads each user's ratings from the database at request time, so a rating made a
moment ago already counts (fold-in), with or without retraining.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
from sqlalchemy import select

from app.metrics import SCORE_BATCH_SIZE, SCORE_BATCHES
from app.models import Movie, Rating
from ml.hybrid import top_k

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from ml.hybrid import HybridRecommender

ratings = Rating.__table__  # type: ignore[attr-defined]
movies = Movie.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class RecRequest:
    user_id: int
    first: int
    exclude_rated: bool


@dataclass(frozen=True)
class Recommended:
    movie_id: int
    score: float
    rank: int


async def rated_by(*, session: AsyncSession, user_ids: Sequence[int]) -> dict[int, list[tuple[int, float]]]:
    """Each user's (movie_id, rating) pairs, in one statement."""
    stmt = select(ratings.c.user_id, ratings.c.movie_id, ratings.c.rating).where(
        ratings.c.user_id.in_(user_ids)
    )
    out: dict[int, list[tuple[int, float]]] = {u: [] for u in user_ids}
    for user_id, movie_id, rating in (await session.execute(stmt)).all():
        out[user_id].append((movie_id, rating))
    return out


def history_matrix(
    model: HybridRecommender, users: Sequence[int], rated: dict[int, list[tuple[int, float]]]
) -> sp.csr_matrix:
    """(len(users), n_items) ratings over the model's columns; movies it does not know are left out."""
    rows, cols, values = [], [], []
    for row, user in enumerate(users):
        if rated[user]:
            ids, vals = zip(*rated[user], strict=True)
            index = model.item_index(np.asarray(ids))
            keep = index >= 0
            rows += [row] * int(keep.sum())
            cols += index[keep].tolist()
            values += np.asarray(vals)[keep].tolist()
    return sp.csr_matrix((np.asarray(values, np.float32), (rows, cols)), shape=(len(users), model.n_items))


def _score_batch(model: HybridRecommender, history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
    SCORE_BATCHES.inc()
    SCORE_BATCH_SIZE.observe(history.shape[0])
    return model.score(history, users)


async def recommend_many(
    *,
    session: AsyncSession,
    model: HybridRecommender | None,
    requests: Sequence[RecRequest],
    rated: dict[int, list[tuple[int, float]]] | None = None,
) -> list[list[Recommended]]:
    """Answers for all ``requests`` with ONE scoring call (a matrix product per component).

    ``rated`` is the users' ratings if the caller has read them already (``rated_by``)."""
    users = list(dict.fromkeys(r.user_id for r in requests))
    if rated is None:
        rated = await rated_by(session=session, user_ids=users)
    if model is None:
        return await _popular(session=session, requests=requests, rated=rated)
    history = history_matrix(model, users, rated)
    # Off the event loop: numpy releases the GIL, other requests keep being served.
    scores = await asyncio.to_thread(_score_batch, model, history, model.user_index(users))
    row_of = {u: i for i, u in enumerate(users)}
    answers = []
    for request in requests:
        row = scores[row_of[request.user_id]].copy()
        if request.exclude_rated:
            row[history[row_of[request.user_id]].indices] = -np.inf
        [top], [values] = top_k(row[None, :], request.first)
        keep = np.isfinite(values)
        answers.append(
            [
                Recommended(int(model.item_ids[i]), float(v), rank)
                for rank, (i, v) in enumerate(zip(top[keep], values[keep], strict=True), start=1)
            ]
        )
    return answers


async def _popular(
    *, session: AsyncSession, requests: Sequence[RecRequest], rated: dict[int, list[tuple[int, float]]]
) -> list[list[Recommended]]:
    """Most-rated movies: the answer before any model is trained."""
    need = max(r.first for r in requests) + max((len(v) for v in rated.values()), default=0)
    stmt = (
        select(movies.c.movie_id, movies.c.ratings_count)
        .order_by(movies.c.ratings_count.desc(), movies.c.movie_id)
        .limit(need)
    )
    popular = (await session.execute(stmt)).all()
    answers = []
    for request in requests:
        seen = {m for m, _ in rated[request.user_id]} if request.exclude_rated else set()
        picks = [(m, float(np.log1p(c))) for m, c in popular if m not in seen][: request.first]
        answers.append([Recommended(m, s, rank) for rank, (m, s) in enumerate(picks, start=1)])
    return answers
