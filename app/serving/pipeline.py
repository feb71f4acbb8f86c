"""The one recommendation pipeline every list goes through (``recommendations``, ``homePage``
and whatever comes next): mask → score → overlay → diversify → rerank → page.

- **mask**: the columns a request may have (its filter, the user's dismissed and rated movies);
- **score**: one scoring call for the batch, each user once (fold-in: a rating made a moment
  ago already counts);
- **overlay**: the movies added since training, scored by content on the model's scale;
- **diversify**: maximal marginal relevance over the content embeddings, when asked;
- **rerank**: the LLM's P(yes) blended in, where a per-segment ablation showed a gain;
- **page**: ``first`` items after ``offset``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
from sqlalchemy import func, or_, select

from app.infra.coalescer import Coalescer
from app.infra.errors import BadUserInput
from app.infra.tables import genres, movie_genres, movies
from app.serving.catalog_view import CatalogView, content_scores, read_catalog_view, taste
from app.serving.filters import NO_FILTER, ItemFacts, RecFilter
from app.serving.llm_inputs import Ratings, preference_requests
from app.serving.parts import ServesModels
from ml.diversity import mmr
from ml.hybrid import rank_unrated
from ml.llm.rerank import blend

if TYPE_CHECKING:
    from app.serving.champions import Served
    from app.serving.histories import History
    from app.serving.llm_holder import ServedLLM
    from app.serving.parts import ServingParts
    from ml.hybrid import HybridRecommender

FACTS_SECONDS = 300.0  # how long filter facts stand before rating counts are read again


def _popular_conditions(f: RecFilter) -> list[Any]:
    def has(name: str) -> Any:
        return movies.c.movie_id.in_(
            select(movie_genres.c.movie_id)
            .join(genres, genres.c.genre_id == movie_genres.c.genre_id)
            .where(func.lower(genres.c.name) == name.strip().lower())
        )

    where: list[Any] = [movies.c.retired.is_(False)]
    if f.any_genres:
        where.append(or_(*(has(n) for n in f.any_genres)))
    where += [has(n) for n in f.all_genres]
    if f.year_from is not None:
        where.append(movies.c.year >= f.year_from)
    if f.year_to is not None:
        where.append(movies.c.year <= f.year_to)
    if f.min_ratings:
        where.append(movies.c.ratings_count >= f.min_ratings)
    return where


@dataclass(frozen=True)
class RecRequest:
    """One list asked for: ``first`` items after the ``offset`` best (a page), under ``filter``,
    reordered for ``diversity`` (0: pure relevance)."""

    user_id: int
    first: int
    exclude_rated: bool
    filter: RecFilter = NO_FILTER
    offset: int = 0
    diversity: float = 0.0

    @property
    def list_key(self) -> str:
        """Which list this is a page of: what decides the ranking besides the user and model."""
        return f"{int(self.exclude_rated)}:{self.filter.digest()}:{self.diversity:g}"

    @property
    def shape(self) -> str:
        """What besides the user and the model decides the answer (a cache key's tail)."""
        return f"{self.first}:{self.offset}:{self.list_key}"


def pool_size(request: RecRequest) -> int:
    """How many of the best scores a request's page is taken from: its depth, or for a
    diversified list a pool larger than that, which MMR picks from."""
    depth = request.offset + request.first
    return max(3 * depth, 100) if request.diversity else depth


@dataclass(frozen=True)
class Recommended:
    movie_id: int
    score: float
    rank: int


@dataclass(frozen=True)
class UserScores:
    """One user's scores as a page of rows takes them: every model column (-inf where masked)
    and the movies added since training (None when there are none)."""

    scores: np.ndarray
    added: np.ndarray | None


class Pipeline(ServesModels):
    """mask → score → overlay → diversify → rerank → page, for a batch of requests."""

    def __init__(self, parts: ServingParts, *, rerank_candidates: int) -> None:
        super().__init__(parts)
        self.pool = rerank_candidates  # how many of the best the LLM reranks
        self._views: dict[tuple[str, int], tuple[float, CatalogView]] = {}
        self._view_reads: Coalescer[tuple[str, int], CatalogView] = Coalescer(self._read_views)

    async def pages(
        self, served: Served, requests: Sequence[RecRequest], read: History
    ) -> tuple[list[list[Recommended]], set[int]]:
        """Each request's page, and the users whose lists the learned ranker ordered. Reads
        happen here; every step whose work grows with the request (filters over the catalog,
        scoring, the overlay, diversity, deep pages) runs in one call off the event loop, so
        that a heavy list never holds other requests up."""
        view = await self.view(served)
        return await asyncio.to_thread(self.rank, served.model, view, requests, read)

    def rank(
        self, model: HybridRecommender, view: CatalogView, requests: Sequence[RecRequest], read: History
    ) -> tuple[list[list[Recommended]], set[int]]:
        users = read.users  # each user once, in the order of the requests
        row_of = {u: i for i, u in enumerate(users)}
        rows = np.array([row_of[r.user_id] for r in requests])  # each user scored once, ranked per request
        history = read.matrix()
        allowed = np.stack([self.mask(model, view.facts, r, read) for r in requests])  # mask
        exclude = np.array([r.exclude_rated for r in requests])
        scores = self.score(model, history, model.user_index(users))  # score, each user once
        k = max(pool_size(r) for r in requests)
        top, values = rank_unrated(scores[rows], history[rows], k, exclude_rated=exclude, allowed=allowed)
        added = self.overlay(model, view, history, requests, rows, read)  # overlay
        answers = []
        for n, (request, items, scores) in enumerate(zip(requests, top, values, strict=True)):
            keep = np.isfinite(scores)
            ids, scores = np.asarray(model.item_ids)[items[keep]], scores[keep]
            found = [np.asarray(model.item_embeddings)[items[keep]]] if request.diversity else []
            if added is not None and np.isfinite(added[n]).any():  # movies added since training, by content
                extra = np.isfinite(added[n])
                ids = np.concatenate([ids, view.overlay.ids[extra]])
                scores = np.concatenate([scores, added[n][extra]])
                if request.diversity:
                    found.append(view.overlay.vectors[extra])
                order = np.argsort(-scores, kind="stable")
                ids, scores = ids[order], scores[order]
                if request.diversity:
                    found = [np.concatenate(found)[order]]
            if request.diversity:  # diversify
                picked = mmr(found[0], scores, request.offset + request.first, request.diversity)
                ids, scores = ids[picked], scores[picked]
            page = slice(request.offset, request.offset + request.first)  # page
            answers.append(
                [
                    Recommended(int(m), float(v), rank)
                    for rank, (m, v) in enumerate(
                        zip(ids[page], scores[page], strict=True), start=request.offset + 1
                    )
                ]
            )
        return answers, {users[i] for i in model.ranked_rows(history)}

    def user_scores(
        self, model: HybridRecommender, view: CatalogView, request: RecRequest, read: History
    ) -> UserScores:
        """mask → score → overlay for one user, the full vectors kept: what a page of several
        rows (the home page) picks its rows from. Rated movies are masked."""
        history = read.matrix()
        allowed = self.mask(model, view.facts, request, read)
        allowed &= ~np.asarray((history[0] > 0).toarray()).ravel().astype(bool)
        scores = self.score(model, history, model.user_index([request.user_id]))[0]
        added = self.overlay(model, view, history, [request], np.array([0]), read)
        return UserScores(np.where(allowed, scores, -np.inf), None if added is None else added[0])

    @staticmethod
    def overlay(
        model: HybridRecommender,
        view: CatalogView,
        history: sp.csr_matrix,
        requests: Sequence[RecRequest],
        rows: np.ndarray,
        read: History,
    ) -> np.ndarray | None:
        """(len(requests), n_added) content scores of the movies added since training, -inf
        where a request may not have them (its filter, rated or dismissed)."""
        overlay = view.overlay
        if not len(overlay):
            return None
        scale = float(sum(w for w in model.weights.values() if w > 0)) or 1.0
        scores = content_scores(view, taste(model, history), scale)[rows]
        for n, request in enumerate(requests):
            keep = overlay.facts.allowed(request.filter, overlay.index(list(request.filter.exclude)))
            change = read.changes[request.user_id]
            gone = (change.dismissed if not request.filter.include_dismissed else []) + (
                [m for m, _ in change.rated] if request.exclude_rated else []
            )
            if gone:
                columns = overlay.index(gone)
                keep[columns[columns >= 0]] = False
            scores[n][~keep] = -np.inf
        return scores

    @staticmethod
    def mask(model: HybridRecommender, facts: ItemFacts, request: RecRequest, read: History) -> np.ndarray:
        """The columns ``request`` may have: its filter, less the user's dismissed movies."""
        allowed = facts.allowed(request.filter, model.item_index(list(request.filter.exclude)))
        if not request.filter.include_dismissed and (dismissed := read.dismissed(request.user_id)):
            columns = model.item_index(dismissed)
            allowed[columns[columns >= 0]] = False
        return allowed

    async def view(self, served: Served) -> CatalogView:
        """The catalog as ``served`` sees it (filter facts, movies added since its training):
        read once per (version, catalog generation) and again after ``FACTS_SECONDS`` (rating
        counts move)."""
        catalog = (await self.generations.get("catalog", [0]))[0]
        key = (served.version, catalog)
        found = self._views.get(key)
        if found is not None and found[0] > time.monotonic():
            return found[1]
        [view] = await self._view_reads.get_many([key])  # concurrent misses: one read
        self._views = {key: (time.monotonic() + FACTS_SECONDS, view)}  # the latest only
        return view

    async def _read_views(self, keys: list[tuple[str, int]]) -> dict[tuple[str, int], CatalogView]:
        out = {}
        async with self.sessions() as session:
            for version, catalog in keys:
                model = (await self.models.version(version)).model
                out[(version, catalog)] = await read_catalog_view(session, model)
        return out

    def score(self, model: HybridRecommender, history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        """(batch, n_items): one scoring call, counted in the batch metrics."""
        self.metrics.score_batches.inc()
        self.metrics.score_batch_size.observe(history.shape[0])
        return model.score(history, users)

    async def popular(self, requests: Sequence[RecRequest], read: History) -> list[list[Recommended]]:
        """Most-rated movies: the answer before any model is trained, filtered in SQL."""
        rated = read.pairs()
        answers = []
        async with self.sessions() as session:
            known = {n.lower() for n in (await session.execute(select(genres.c.name))).scalars()}
            for request in requests:
                f = request.filter
                for field, names in (("filter.anyGenres", f.any_genres), ("filter.allGenres", f.all_genres)):
                    if unknown := [n for n in names if n.strip().lower() not in known]:
                        raise BadUserInput(f"unknown genre {unknown[0]!r}", field=field)
                skip = set(f.exclude)
                if request.exclude_rated:
                    skip |= {m for m, _ in rated[request.user_id]}
                if not f.include_dismissed:
                    skip |= set(read.dismissed(request.user_id))
                stmt = (
                    select(movies.c.movie_id, movies.c.ratings_count)
                    .where(*_popular_conditions(f))
                    .order_by(movies.c.ratings_count.desc(), movies.c.movie_id)
                    .limit(request.offset + request.first + len(skip))
                )
                picks = [
                    (m, float(np.log1p(c))) for m, c in (await session.execute(stmt)).all() if m not in skip
                ][request.offset : request.offset + request.first]
                answers.append(
                    [Recommended(m, v, rank) for rank, (m, v) in enumerate(picks, start=request.offset + 1)]
                )
        return answers

    async def rerank(
        self,
        served: ServedLLM,
        requests: Sequence[RecRequest],
        answers: list[list[Recommended]],
        rated: Ratings,
    ) -> tuple[list[list[Recommended]], str | None]:
        """Each answer's top ``pool`` reordered by the blend of the recommender's score and the
        LLM's P(Yes) with the weight of its user's segment, all pairs in one batch; users whose
        segment's weight is 0 are not scored. On failure the order stands."""
        answers = [a[: self.pool] for a in answers]
        weights = [served.rerank_weights.weight_for(len(rated[r.user_id])) for r in requests]
        todo = [i for i, a in enumerate(answers) if len(a) > 1 and weights[i] > 0]
        if not todo:
            return answers, None
        async with self.sessions() as session:
            score_requests = await preference_requests(
                session=session,
                users=[requests[i].user_id for i in todo],
                candidates=[[r.movie_id for r in answers[i]] for i in todo],
                rated=rated,
            )
        probabilities, error = await self.fallback.call("rerank", served.backend.score(score_requests))
        if probabilities is None:
            return answers, error
        out = list(answers)
        for i, p_yes in zip(todo, probabilities, strict=True):
            blended = blend(np.array([r.score for r in answers[i]]), p_yes, weights[i])
            order = np.argsort(-blended, kind="stable")
            out[i] = [
                Recommended(answers[i][j].movie_id, float(blended[j]), rank)
                for rank, j in enumerate(order, start=1)
            ]
        return out, None
