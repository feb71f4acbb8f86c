"""Users' ratings as serving needs them: what the serving model was trained on, and the
ratings made since, cached per user generation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from app.cache import Kind
from app.models import Rating
from app.services.llm_inputs import Ratings, history_matrix, rated_by

if TYPE_CHECKING:
    import scipy.sparse as sp
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from app.cache import Generations, TwoLevelCache
    from ml.hybrid import HybridRecommender

ratings_table = Rating.__table__  # type: ignore[attr-defined]


async def rated_since(*, session: AsyncSession, user_ids: Sequence[int], since: float) -> Ratings:
    """Each user's ratings made at or after ``since`` (an index range per user: usually none)."""
    stmt = select(ratings_table.c.user_id, ratings_table.c.movie_id, ratings_table.c.rating).where(
        ratings_table.c.user_id.in_(user_ids), ratings_table.c.timestamp >= int(since)
    )
    out: Ratings = {u: [] for u in user_ids}
    for user_id, movie_id, rating in (await session.execute(stmt)).all():
        out[user_id].append((movie_id, rating))
    return out


HISTORY = Kind("history", 600)
SINCE = Kind("history-since", 600)


def _pairs(value: Any) -> list[tuple[int, float]]:
    return [(int(m), float(r)) for m, r in value]


@dataclass(frozen=True)
class History:
    """One read of some users' ratings: the model's trained rows and what they rated since,
    or, without a trained model, their whole histories. Scoring and prompts both use it."""

    model: HybridRecommender | None
    users: list[int]
    since: Ratings | None  # with a trained model: the ratings made since its data cut-off
    whole: Ratings | None  # without one: every rating

    def matrix(self) -> sp.csr_matrix:
        """(len(users), n_items) ratings over the model's columns, for scoring: the trained
        rows sliced from the model's matrix, the few ratings made since written over them."""
        assert self.model is not None
        if self.since is None:
            return history_matrix(self.model, self.users, self.pairs())
        rows = self.model.trained_rows(self.users).tolil()
        for i, user in enumerate(self.users):
            new = self.since[user]
            if new:
                index = self.model.item_index([m for m, _ in new])
                for j, (_, rating) in zip(index, new, strict=True):
                    if j >= 0:
                        rows[i, int(j)] = rating
        return rows.tocsr()

    def pairs(self) -> Ratings:
        """Each user's (movie, rating) pairs."""
        if self.whole is not None:
            return self.whole
        assert self.model is not None and self.since is not None
        trained = self.model.trained_ratings(self.users)
        out: Ratings = {}
        for user in self.users:
            merged = dict(trained[user])
            merged.update(self.since[user])  # a rating changed since training replaces the trained one
            out[user] = list(merged.items())
        return out


class Histories:
    """Users' ratings as serving needs them, without reading whole histories per request:
    what the serving model was trained on (in memory, memory-mapped) plus the ratings made
    since (one indexed read), cached per user *generation* so that a new rating counts on the
    next request (``rateMovie`` bumps it). Without a model, whole histories, cached the same way."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], cache: TwoLevelCache, generations: Generations
    ) -> None:
        self.sessions = sessions
        self.cache = cache
        self.generations = generations

    async def read(self, model: HybridRecommender | None, user_ids: Sequence[int]) -> History:
        """One read for these users (through the cache; the database for what it misses)."""
        users = list(dict.fromkeys(user_ids))
        gens = await self.generations.get("user", users)
        trained = model is not None and model.history is not None and model.data_cutoff is not None
        if not trained:

            async def whole(keys: list[int]) -> Ratings:
                async with self.sessions() as session:
                    return await rated_by(session=session, user_ids=keys)

            found = await self.cache.get_many(HISTORY, users, lambda u: f"{u}:{gens[u]}", whole, default=[])
            return History(model, users, None, {u: _pairs(v) for u, v in zip(users, found, strict=True)})
        assert model is not None and model.data_cutoff is not None
        cutoff = model.data_cutoff

        async def since(keys: list[int]) -> Ratings:
            async with self.sessions() as session:
                return await rated_since(session=session, user_ids=keys, since=cutoff)

        recent = await self.cache.get_many(
            SINCE, users, lambda u: f"{u}:{gens[u]}:{int(cutoff)}", since, default=[]
        )
        return History(model, users, {u: _pairs(v) for u, v in zip(users, recent, strict=True)}, None)

    async def of(self, model: HybridRecommender | None, user_ids: Sequence[int]) -> Ratings:
        """Each user's (movie, rating) pairs."""
        return (await self.read(model, user_ids)).pairs()
