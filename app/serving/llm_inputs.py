"""What the LLM is told at serving time, read from the database: the facts about movies,
the evidence from a user's ratings, and the prompts built from them.

The prompts themselves are put together by ``ml.llm.prompts`` (the same functions that
build the fine-tuning data); this module only gathers the facts they take.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
from sqlalchemy import select

from app.infra.tables import movie_embeddings as movie_vectors
from app.infra.tables import ratings as ratings_table
from app.services import catalog
from ml import attribution
from ml.llm.evidence import POPULARITY, RATING, Evidence, gather_evidence, popularity_reason, rated_reason
from ml.llm.faithfulness import FactMovie, Facts
from ml.llm.prompts import (
    LIKED_THRESHOLD,
    ExplainRequest,
    MovieFacts,
    ScoreRequest,
    display_title,
    movie_label,
    preference_request,
    profile_movies,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from ml.hybrid import HybridRecommender

Ratings = dict[int, list[tuple[int, float]]]  # user id -> (movie id, rating) pairs


async def rated_by(*, session: AsyncSession, user_ids: Sequence[int]) -> Ratings:
    """Each user's (movie_id, rating) pairs, in one statement."""
    stmt = select(ratings_table.c.user_id, ratings_table.c.movie_id, ratings_table.c.rating).where(
        ratings_table.c.user_id.in_(user_ids)
    )
    out: Ratings = {u: [] for u in user_ids}
    for user_id, movie_id, rating in (await session.execute(stmt)).all():
        out[user_id].append((movie_id, rating))
    return out


@dataclass
class CatalogFacts:
    """Labels, genres and rating statistics of a set of movies, as the database has them."""

    labels: dict[int, str]
    genres: dict[int, list[str]]
    stats: dict[int, tuple[float | None, int | None]]  # mean rating and count
    years: dict[int, int | None] = field(default_factory=dict)

    def label(self, movie_id: int) -> str:
        return self.labels.get(movie_id, f"movie {movie_id}")

    def movie(self, movie_id: int) -> MovieFacts:
        mean, count = self.stats.get(movie_id, (None, None))
        return MovieFacts(self.label(movie_id), self.genres.get(movie_id, []), mean, count)


async def catalog_facts(session: AsyncSession, movie_ids: Sequence[int]) -> CatalogFacts:
    ids = list(dict.fromkeys(movie_ids))
    rows = await catalog.movies_by_ids(session=session, movie_ids=ids)
    genres = await catalog.genres_by_movie_ids(session=session, movie_ids=ids)
    stats = {
        m: (r.rating_sum / r.ratings_count, r.ratings_count) if r.ratings_count else (None, None)
        for m, r in rows.items()
    }
    return CatalogFacts(
        {m: movie_label(r.title, r.year) for m, r in rows.items()},
        dict(genres),
        stats,
        {m: r.year for m, r in rows.items()},
    )


def _embeddings(model: HybridRecommender | None, movie_ids: Sequence[int]) -> dict[int, np.ndarray]:
    if model is None or not len(movie_ids):
        return {}
    index = model.item_index(list(movie_ids))
    return {m: model.item_embeddings[i] for m, i in zip(movie_ids, index, strict=True) if i >= 0}


async def explanation_inputs(
    *,
    session: AsyncSession,
    model: HybridRecommender | None,
    pairs: Sequence[tuple[int, int]],
    rated: Ratings,
    matrix: sp.csr_matrix | None = None,
) -> list[tuple[ExplainRequest, list[Evidence]]]:
    """For each (user, movie): the request for the LLM and the evidence it carries; ``rated``
    holds the users' ratings, ``matrix`` their scoring rows in the order users first appear in
    ``pairs`` (as served: dismissals included; built from ``rated`` when not given).

    The evidence is the movie's attributed reasons (``ml.attribution``); a movie the model
    does not know (added since training, scored by content) takes the liked movies nearest
    to it by content."""
    users = list(dict.fromkeys(u for u, _ in pairs))
    liked = {u: [(m, r) for m, r in rated[u] if r > LIKED_THRESHOLD] for u in users}
    found = _attributed(model, pairs, users, rated, matrix)
    movies = [m for _, m in pairs] + [m for u in users for m, _ in liked[u]]
    movies += [e.movie_id for reasons in found.values() for e in reasons]
    facts = await catalog_facts(session, movies)
    embedding_of = _embeddings(model, list(dict.fromkeys(movies)))
    if added := [m for m in dict.fromkeys(movies) if m not in embedding_of]:  # added since training
        stmt = select(movie_vectors.c.movie_id, movie_vectors.c.vector).where(
            movie_vectors.c.movie_id.in_(added)
        )
        for movie_id, vector in (await session.execute(stmt)).all():
            embedding_of[movie_id] = np.frombuffer(vector, dtype=np.float32)
    out = []
    shown = {m: display_title(label) for m, label in facts.labels.items()}  # as a person reads them
    for user, movie in pairs:
        own = dict(rated[user])
        if (user, movie) in found:
            worded = [_worded(e, movie, own, facts, shown, embedding_of) for e in found[(user, movie)]]
            evidence = _merged(worded)
        else:
            evidence = gather_evidence(
                candidate=movie,
                rated=liked[user],
                embedding_of=embedding_of,
                titles=shown,
                genres=facts.genres,
            )
        mean, count = facts.stats.get(movie, (None, None))
        known = Facts(
            candidate=fact_movie(facts, movie, own.get(movie)),
            evidence=tuple(
                fact_movie(facts, e.movie_id, own.get(e.movie_id)) for e in evidence if e.kind != POPULARITY
            ),
            mean_rating=mean,
            ratings_count=count,
            prior=next((i for i, e in enumerate(evidence) if e.kind == POPULARITY), None),
        )
        out.append((ExplainRequest(known.candidate.title, [e.reason for e in evidence], known), evidence))
    return out


def _attributed(
    model: HybridRecommender | None,
    pairs: Sequence[tuple[int, int]],
    users: list[int],
    rated: Ratings,
    matrix: sp.csr_matrix | None,
) -> dict[tuple[int, int], list[Evidence]]:
    """The reasons of each pair the model scores (its movie among the model's columns), with
    ``reason`` left empty for ``_worded``: movie ids and shares only."""
    if model is None:
        return {}
    rows = matrix if matrix is not None else history_matrix(model, users, rated)
    out: dict[tuple[int, int], list[Evidence]] = {}
    for i, user in enumerate(users):
        movies = [m for u, m in pairs if u == user]
        columns = model.item_index(movies)
        known = [(m, c) for m, c in zip(movies, columns, strict=True) if c >= 0]
        if not known:
            continue
        row = int(model.user_index([user])[0])
        split = attribution.served_parts(model, rows[i], row, np.array([c for _, c in known]))
        for (movie, _), reasons in zip(known, attribution.reasons(split), strict=True):
            out[(user, movie)] = [
                Evidence(
                    int(model.item_ids[r.column]) if r.kind == attribution.RATING else movie,
                    "",
                    0.0,
                    round(r.share, 4),
                    RATING if r.kind == attribution.RATING else POPULARITY,
                )
                for r in reasons
            ]
    return out


def _merged(evidence: list[Evidence]) -> list[Evidence]:
    """Reasons that read the same said once, their weights added: ML-100K lists 18 titles twice
    under two ids ("you rated Chasing Amy (1997) 5/5" twice on one card, each half the weight)."""
    out: dict[str, Evidence] = {}
    for e in evidence:
        same = out.get(e.reason)
        out[e.reason] = e if same is None else replace(same, weight=round(same.weight + e.weight, 4))
    return sorted(out.values(), key=lambda e: -e.weight)


def _worded(
    evidence: Evidence,
    candidate: int,
    own: dict[int, float],
    facts: CatalogFacts,
    shown: dict[int, str],
    embedding_of: dict[int, np.ndarray],
) -> Evidence:
    """An attributed reason in words, with the content similarity of its movie and the candidate."""
    if evidence.kind == POPULARITY:
        mean, count = facts.stats.get(candidate, (None, None))
        return replace(evidence, reason=popularity_reason(mean, count), similarity=1.0)
    movie = evidence.movie_id
    wanted = set(facts.genres.get(candidate, []))
    shared = [g for g in facts.genres.get(movie, []) if g in wanted]
    a, b = embedding_of.get(movie), embedding_of.get(candidate)
    similarity = float(a @ b) if a is not None and b is not None else 0.0
    title = shown.get(movie, f"movie {movie}")
    return replace(evidence, reason=rated_reason(title, own.get(movie, 0.0), shared), similarity=similarity)


def fact_movie(facts: CatalogFacts, movie_id: int, rating: float | None) -> FactMovie:
    return FactMovie(
        display_title(facts.label(movie_id)),
        facts.years.get(movie_id),
        tuple(facts.genres.get(movie_id, [])),
        rating,
    )


async def preference_requests(
    *, session: AsyncSession, users: Sequence[int], candidates: Sequence[Sequence[int]], rated: Ratings
) -> list[ScoreRequest]:
    """One preference request per user over their candidate movie ids. ``rated`` holds the
    users' ratings; the movies a profile names and the candidates are looked up, and the
    genres of every rated movie (the user's taste in each candidate's genres)."""
    named = [m for u in users for group in profile_movies(rated[u]) for m in group]
    facts = await catalog_facts(session, [m for c in candidates for m in c] + named)
    genres = await catalog.genres_by_movie_ids(
        session=session, movie_ids=list({m for u in users for m, _ in rated[u]})
    )
    return [
        preference_request(
            rated[user],
            [facts.movie(m) for m in movies],
            facts.label,
            genres_of=lambda movie: genres.get(movie, []),
        )
        for user, movies in zip(users, candidates, strict=True)
    ]


def history_matrix(model: HybridRecommender, users: Sequence[int], rated: Ratings) -> sp.csr_matrix:
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
