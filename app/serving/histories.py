"""Users' ratings as serving needs them: what the serving model was trained on, and what
changed since (ratings made, ratings deleted, movies dismissed), cached per user generation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from app.infra.cache import Kind
from app.infra.tables import deleted_ratings as deleted
from app.infra.tables import dismissals
from app.infra.tables import ratings as ratings_table
from app.serving.llm_inputs import Ratings, history_matrix, rated_by
from app.serving.parts import CachedReads

if TYPE_CHECKING:
    import scipy.sparse as sp
    from sqlalchemy.ext.asyncio import AsyncSession

    from ml.hybrid import HybridRecommender

DISMISSED = -1.0  # a dismissal's value in the scoring matrix: taste against, not for


async def rated_since(*, session: AsyncSession, user_ids: Sequence[int], since: float) -> Ratings:
    """Each user's ratings made at or after ``since`` (an index range per user: usually none)."""
    stmt = select(ratings_table.c.user_id, ratings_table.c.movie_id, ratings_table.c.rating).where(
        ratings_table.c.user_id.in_(user_ids), ratings_table.c.timestamp >= int(since)
    )
    out: Ratings = {u: [] for u in user_ids}
    for user_id, movie_id, rating in (await session.execute(stmt)).all():
        out[user_id].append((movie_id, rating))
    return out


async def _ids_by_user(session: AsyncSession, stmt: Any, user_ids: Sequence[int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {u: [] for u in user_ids}
    for user_id, movie_id in (await session.execute(stmt)).all():
        out[user_id].append(movie_id)
    return out


async def dismissed_by(*, session: AsyncSession, user_ids: Sequence[int]) -> dict[int, list[int]]:
    stmt = select(dismissals.c.user_id, dismissals.c.movie_id).where(dismissals.c.user_id.in_(user_ids))
    return await _ids_by_user(session, stmt, user_ids)


async def deleted_since(
    *, session: AsyncSession, user_ids: Sequence[int], since: float
) -> dict[int, list[int]]:
    stmt = select(deleted.c.user_id, deleted.c.movie_id).where(
        deleted.c.user_id.in_(user_ids), deleted.c.deleted_at >= int(since)
    )
    return await _ids_by_user(session, stmt, user_ids)


HISTORY = Kind("user-history", 600)
SINCE = Kind("user-changes", 600)


def _pairs(value: Any) -> list[tuple[int, float]]:
    return [(int(m), float(r)) for m, r in value]


@dataclass(frozen=True)
class Changes:
    """One user's ratings against the model's stored history: made since, deleted since, and
    the movies they dismissed (or, without a trained model, their whole history)."""

    rated: list[tuple[int, float]]
    deleted: list[int]
    dismissed: list[int]

    def encode(self) -> dict[str, Any]:
        return {"r": self.rated, "x": self.deleted, "d": self.dismissed}

    @classmethod
    def decode(cls, value: Any) -> Changes:
        return cls(_pairs(value["r"]), [int(m) for m in value["x"]], [int(m) for m in value["d"]])


NOTHING = Changes([], [], [])


@dataclass(frozen=True)
class History:
    """One read of some users' ratings: the model's trained rows and what changed since, or,
    without a trained model, their whole histories. Scoring and prompts both use it."""

    model: HybridRecommender | None
    users: list[int]
    changes: dict[int, Changes]
    trained: bool  # False: ``changes`` hold whole histories

    def matrix(self) -> sp.csr_matrix:
        """(len(users), n_items) over the model's columns, for scoring: the trained rows sliced
        from the model's matrix, the ratings made since written over them, deleted ones gone,
        and dismissed movies as ``DISMISSED`` (taste against them, and never recommended)."""
        assert self.model is not None
        if not self.trained:
            rows = history_matrix(self.model, self.users, self.pairs()).tolil()
        else:
            rows = self.model.trained_rows(self.users).tolil()
        for i, user in enumerate(self.users):
            change = self.changes[user]
            # deletions first: a movie rated again since its rating was deleted keeps the new one
            writes = [(m, 0.0) for m in change.deleted]
            writes += [(m, r) for m, r in change.rated] if self.trained else []
            writes += [(m, DISMISSED) for m in change.dismissed]
            if writes:
                index = self.model.item_index([m for m, _ in writes])
                for j, (_, value) in zip(index, writes, strict=True):
                    if j >= 0:
                        rows[i, int(j)] = value
        out = rows.tocsr()
        out.eliminate_zeros()
        return out

    def pairs(self) -> Ratings:
        """Each user's (movie, rating) pairs."""
        if not self.trained:
            return {u: self.changes[u].rated for u in self.users}
        assert self.model is not None
        trained = self.model.trained_ratings(self.users)
        out: Ratings = {}
        for user in self.users:
            change = self.changes[user]
            merged = dict(trained[user])
            merged.update(change.rated)  # a rating changed since training replaces the trained one
            for movie in change.deleted:
                if movie not in dict(change.rated):
                    merged.pop(movie, None)
            out[user] = list(merged.items())
        return out

    def dismissed(self, user: int) -> list[int]:
        return self.changes[user].dismissed


class Histories(CachedReads):
    """Users' ratings as serving needs them, without reading whole histories per request:
    what the serving model was trained on (in memory, memory-mapped) plus what changed since
    (one indexed read per kind), cached per user *generation* so that a new rating, a deleted
    one or a dismissal counts on the next request (each bumps it). Without a model, whole
    histories, cached the same way."""

    async def read(self, model: HybridRecommender | None, user_ids: Sequence[int]) -> History:
        """One read for these users (through the cache; the database for what it misses)."""
        users = list(dict.fromkeys(user_ids))
        gens = await self.generations.get("user", users)
        trained = model is not None and model.history is not None and model.data_cutoff is not None
        cutoff = model.data_cutoff if trained and model is not None else None

        async def fetch(keys: list[int]) -> dict[int, Any]:
            async with self.sessions() as session:
                if cutoff is None:
                    rated, gone = await rated_by(session=session, user_ids=keys), {}
                else:
                    rated = await rated_since(session=session, user_ids=keys, since=cutoff)
                    gone = await deleted_since(session=session, user_ids=keys, since=cutoff)
                dismissed = await dismissed_by(session=session, user_ids=keys)
            return {u: Changes(rated[u], gone.get(u, []), dismissed[u]).encode() for u in keys}

        if cutoff is None:
            found = await self.cache.get_many(HISTORY, users, lambda u: f"{u}:{gens[u]}", fetch)
        else:
            found = await self.cache.get_many(SINCE, users, lambda u: f"{u}:{gens[u]}:{int(cutoff)}", fetch)
        changes = {
            u: Changes.decode(v) if v is not None else NOTHING for u, v in zip(users, found, strict=True)
        }
        return History(model, users, changes, cutoff is not None)

    async def of(self, model: HybridRecommender | None, user_ids: Sequence[int]) -> Ratings:
        """Each user's (movie, rating) pairs."""
        return (await self.read(model, user_ids)).pairs()
