"""Recommendations for a batch of requests: one read of the users' ratings, one scoring call,
and, where the LLM's rerank was shown to help, one batched rerank of the top candidates.

Scoring reads each user's ratings at request time, so a rating made a moment ago already
counts (fold-in), with or without retraining.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
from sqlalchemy import func, or_, select

from app.batching import Coalescer
from app.cache import Kind
from app.errors import BadUserInput, NotFound
from app.models import genres, movie_genres, movies
from app.services.catalog_view import CatalogView, content_scores, read_catalog_view, taste
from app.services.filters import NO_FILTER, ItemFacts, RecFilter
from app.services.llm_inputs import Ratings, preference_requests
from app.services.parts import ServesModels
from app.services.tokens import Signer, peek
from ml import embeddings, similarity
from ml.diversity import mmr
from ml.llm.rerank import blend
from ml.registry import RECOMMENDER

if TYPE_CHECKING:
    from app.holders import Served
    from app.llm import ServedLLM
    from app.services.experiments import ExperimentService
    from app.services.histories import History
    from app.services.parts import ServingParts
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


MAX_DEPTH = 1000  # how far into a ranking pages may go


def cursor_rank(after: str | None) -> int:
    """The rank a recommendations cursor says its page follows (0 when it is not a cursor),
    read without checking it: what an operation is priced at before it runs, which then
    refuses a changed cursor."""
    payload = peek(after) if after else None
    if payload is None or len(payload) != 5 or type(payload[4]) is not int:
        return 0
    return min(max(payload[4], 0), MAX_DEPTH)


def pool_size(request: RecRequest) -> int:
    """How many of the best scores a request's page is taken from: its depth, or for a
    diversified list a pool larger than that, which MMR picks from."""
    depth = request.offset + request.first
    return max(3 * depth, 100) if request.diversity else depth


@dataclass(frozen=True)
class RecommendationShown:
    """What a recommendation's id says: who was shown which movie, by what, at which rank."""

    user_id: int
    movie_id: int
    version: str | None
    experiment: str | None
    arm: str | None
    rank: int


@dataclass(frozen=True)
class Recommended:
    movie_id: int
    score: float
    rank: int


@dataclass(frozen=True)
class ServedBy:
    """What answered a batch: a model version or the popularity fallback (and why), and the
    LLM's rerank when it took part (with its error, if it failed and the order stood)."""

    version: str | None
    reason: str | None = None
    rerank: dict[str, Any] | None = None
    experiment: str | None = None  # the A/B experiment the user is in, and their arm
    arm: str | None = None
    # the learned ranker, when it ordered this list (the user has few ratings): what it serves
    ranker: dict[str, Any] | None = None

    def extension(self) -> dict[str, Any]:
        """The response's ``extensions.recommender``."""
        out: dict[str, Any] = (
            {"model": RECOMMENDER, "version": self.version}
            if self.version is not None
            else {"model": "popularity", "reason": self.reason}
        )
        if self.rerank is not None:
            out["rerank"] = self.rerank
        if self.experiment is not None:
            out.update(experiment=self.experiment, arm=self.arm)
        if self.ranker is not None:
            out["ranker"] = self.ranker
        return out


NO_MODEL = ServedBy(None, "no trained model yet: run `cinerec train`")


def ranker_extension(served: Served | None) -> dict[str, Any] | None:
    """What ``extensions.recommender.ranker`` says when the learned ranker ordered a list: the
    model version it belongs to, and the users it orders (those with 1 to ``upTo`` ratings)."""
    if served is None or served.model.ranker is None:
        return None
    return {"version": served.version, "upTo": served.model.ranker_up_to}


def _encode_answer(value: tuple[list[Recommended], ServedBy]) -> Any:
    answers, by = value
    served = [by.version, by.reason, by.rerank, by.experiment, by.arm, by.ranker]
    return [[[r.movie_id, r.score, r.rank] for r in answers], served]


def _decode_answer(value: Any) -> tuple[list[Recommended], ServedBy]:
    answers, served = value
    return [Recommended(int(m), float(s), int(k)) for m, s, k in answers], ServedBy(*served)


# The best hits of a search or a similar list, as two arrays (movie ids, scores): 1.3 KB for
# 100 hits, where a list of 100 (id, score) pairs takes 11 KB. Cached at the longest list
# anyone may ask for, in the process only: the keys of search are strangers' texts, so Redis
# would fill at their rate (27 MB in 4 minutes of distinct searches, benchmarks/soak.py).
Hits = tuple[np.ndarray, np.ndarray]


def _hits(model: HybridRecommender, top: np.ndarray, scores: np.ndarray) -> Hits:
    return np.asarray(model.item_ids)[top].astype(np.int32), np.asarray(scores, dtype=np.float64)


def _with_overlay(
    model: HybridRecommender,
    hits: tuple[np.ndarray, np.ndarray],
    view: CatalogView,
    query: np.ndarray,
    k: int,
    leave_out: int | None = None,
    scale: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Hits:
    """The model's own hits merged with the movies added since its training, best first: those
    by their content cosine with ``query``, put on the hits' scale by ``scale`` when given."""
    ids, scores = _hits(model, *hits)
    overlay = view.overlay
    if not len(overlay):
        return ids, scores
    cosines = overlay.vectors @ query
    if scale is not None:
        cosines = scale(cosines)
    keep = ~overlay.facts.retired & (overlay.ids != (leave_out if leave_out is not None else -1))
    ids = np.concatenate([ids, overlay.ids[keep].astype(np.int32)])
    scores = np.concatenate([scores, cosines[keep].astype(np.float64)])
    order = np.argsort(-scores, kind="stable")[:k]
    return ids[order], scores[order]


def _first(hits: Hits, first: int) -> list[tuple[int, float]]:
    ids, scores = hits
    return list(zip(ids[:first].tolist(), scores[:first].tolist(), strict=True))


# An answer after a failed rerank is given, not cached: the next request tries the LLM again.
RECOMMENDATIONS = Kind(
    "recommendations",
    600,
    True,
    _encode_answer,
    _decode_answer,
    keep=lambda v: not (v[1].rerank or {}).get("error"),
)
SIMILAR = Kind("similar", 3600, False)
SEARCH = Kind("search", 3600, False)


class RecommendationService(ServesModels):
    def __init__(
        self, parts: ServingParts, *, rerank_candidates: int, secret: str, max_hits: int = 100
    ) -> None:
        self.max_hits = max_hits  # the longest similar or search list anyone may ask for
        self._cursors = Signer(secret, "recommendation-cursor")
        self._ids = Signer(secret, "recommendation-id")
        super().__init__(parts)
        self.pool = rerank_candidates
        self.experiments: ExperimentService | None = None
        self._views: dict[tuple[str, int], tuple[float, CatalogView]] = {}
        self._view_reads: Coalescer[tuple[str, int], CatalogView] = Coalescer(self._read_views)
        # concurrent requests' misses are computed together: one histories read, one scoring call
        self._pipeline: Coalescer[tuple[str | None, RecRequest], tuple[list[Recommended], ServedBy]] = (
            Coalescer(self._compute_batch)
        )

    async def answer(self, requests: Sequence[RecRequest]) -> list[tuple[list[Recommended], ServedBy]]:
        """Answers for every request, in order. Each request is answered by the champion, or,
        while an experiment runs, by its user's arm's version.

        Each answer is cached under what it depends on: the user's generation (a new rating
        moves it), the model version, and the LLM version and weight when it reranked."""
        served_llm = self.llm.current
        experiment = self.experiments.running if self.experiments is not None else None
        arms = {r.user_id: experiment.arm_for(r.user_id) for r in requests} if experiment else {}
        champion = self.models.current
        versions = {
            r.user_id: arms[r.user_id].version if experiment else (champion.version if champion else None)
            for r in requests
        }
        use_llm = bool(
            champion is not None
            and served_llm.rerank_weights.any
            and served_llm.backend.can_score
            and self.pool
        )
        gens = await self.generations.get("user", [r.user_id for r in requests])
        llm_key = f"{served_llm.version or 'base'}x{served_llm.rerank_weights.key()}" if use_llm else "-"
        trial = f":{experiment.name}" if experiment else ""

        catalog = (await self.generations.get("catalog", [0]))[0]  # an added or retired movie moves it

        def key(r: RecRequest) -> str:
            model_key = versions[r.user_id] or "popularity"
            return f"{r.user_id}:{gens[r.user_id]}:{model_key}:{llm_key}:{catalog}:{r.shape}{trial}"

        async def compute(missing: list[RecRequest]) -> dict[RecRequest, tuple[list[Recommended], ServedBy]]:
            keys = [(versions[r.user_id], r) for r in missing]
            return dict(zip(missing, await self._pipeline.get_many(keys), strict=True))

        found = await self.cache.get_many(RECOMMENDATIONS, requests, key, compute)
        if experiment is not None and self.experiments is not None:
            out = []
            for request, (answers, by) in zip(requests, found, strict=True):
                arm = arms[request.user_id]
                self.experiments.record(experiment, arm, request.user_id, [a.movie_id for a in answers])
                out.append((answers, replace(by, experiment=experiment.name, arm=arm.alias)))
            return out
        return found

    async def _compute_batch(
        self, keys: list[tuple[str | None, RecRequest]]
    ) -> dict[tuple[str | None, RecRequest], tuple[list[Recommended], ServedBy]]:
        """Concurrent requests' misses, grouped by the model version that answers them."""
        async with self.llm.lease() as served_llm:
            return await self._compute_groups(keys, served_llm)

    async def _compute_groups(
        self, keys: list[tuple[str | None, RecRequest]], served_llm: ServedLLM
    ) -> dict[tuple[str | None, RecRequest], tuple[list[Recommended], ServedBy]]:
        out: dict[tuple[str | None, RecRequest], tuple[list[Recommended], ServedBy]] = {}
        for version in dict.fromkeys(v for v, _ in keys):
            served = await self.models.version(version) if version is not None else None
            use_llm = bool(
                served is not None
                and served_llm.rerank_weights.any
                and served_llm.backend.can_score
                and self.pool
            )
            group = [r for v, r in keys if v == version]
            answers = await self._compute(group, served, served_llm, use_llm)
            out.update({(version, r): a for r, a in zip(group, answers, strict=True)})
        return out

    async def _compute(
        self, requests: Sequence[RecRequest], served: Served | None, served_llm: ServedLLM, use_llm: bool
    ) -> list[tuple[list[Recommended], ServedBy]]:
        # the rerank reorders a first page of plain relevance only: a page further on, a filtered
        # or a diversified list stands as scored
        use_llm = use_llm and all(
            r.offset == 0 and not r.diversity and not r.filter.narrows for r in requests
        )
        # with a rerank, the top `pool` are scored and reordered; each request then keeps its `first`
        wide = [replace(r, first=max(r.first, self.pool)) for r in requests] if use_llm else requests
        by = NO_MODEL if served is None else ServedBy(served.version)
        # one read of the users' ratings: scoring takes the matrix, the rerank's prompts the pairs
        history = await self.histories.read(served.model if served else None, [r.user_id for r in requests])
        ranked: set[int] = set()
        if served is None:
            answers = await self._popular(wide, history)
        else:
            answers, ranked = await self._recommend(served, wide, history)
        if use_llm:
            answers, error = await self._rerank(served_llm, requests, answers, history.pairs())
            rerank = {**served_llm.describe(), "weights": served_llm.rerank_weights.describe()}
            if error:
                rerank["error"] = error
            by = ServedBy(by.version, rerank=rerank)
        with_ranker = replace(by, ranker=ranker_extension(served)) if ranked else by
        return [
            (a[: r.first], with_ranker if r.user_id in ranked else by)
            for a, r in zip(answers, requests, strict=True)
        ]

    def serving_version(self, user_id: int) -> str | None:
        """The recommender version that answers ``user_id`` now: their experiment arm's, or the
        champion's (None: popularity)."""
        experiment = self.experiments.running if self.experiments is not None else None
        if experiment is not None:
            return experiment.arm_for(user_id).version
        return self.models.current.version if self.models.current is not None else None

    def cursor(self, request: RecRequest, version: str | None, rank: int) -> str:
        """The cursor after the item at ``rank`` of ``request``'s list."""
        return self._cursors.sign(["c", request.user_id, version, request.list_key, rank])

    def offset(self, after: str, request: RecRequest) -> int:
        """Where the page after ``after`` starts in ``request``'s ranking. A cursor of another
        user's list, of another list (filter, diversity) or from before the model changed is
        refused, as is a changed one: the client starts again from the first page."""
        payload = self._cursors.read(after, field="after")
        if len(payload) != 5 or payload[0] != "c" or not isinstance(payload[4], int):
            raise BadUserInput("invalid after: not a recommendations cursor", field="after")
        _, user, version, list_key, rank = payload
        if user != request.user_id:
            raise BadUserInput("the cursor belongs to another user's recommendations", field="after")
        if list_key != request.list_key:
            raise BadUserInput(
                "the cursor belongs to another list (another filter, diversity or excludeRated)",
                field="after",
            )
        now = self.serving_version(request.user_id)
        if version != now:
            raise BadUserInput(
                f"the ranking changed (version {now or 'popularity'} serves now, "
                f"not {version or 'popularity'}): start again from the first page",
                field="after",
                reason="MODEL_CHANGED",
            )
        if not 0 < rank <= MAX_DEPTH:
            raise BadUserInput(f"pages go at most {MAX_DEPTH} items deep", field="after")
        return int(rank)

    def recommendation_id(self, user_id: int, movie_id: int, rank: int, by: ServedBy) -> str:
        """What a client sends back with a click on this recommendation."""
        return self._ids.sign(["r", user_id, movie_id, by.version, by.experiment, by.arm, rank])

    def read_recommendation_id(self, token: str) -> RecommendationShown:
        payload = self._ids.read(token, field="recommendationId")
        if len(payload) != 7 or payload[0] != "r":
            raise BadUserInput("invalid recommendationId", field="recommendationId")
        return RecommendationShown(*payload[1:])

    def _served(self) -> Served:
        served = self.models.current
        if served is None:
            raise NotFound("no trained model yet: run `cinerec train`")
        return served

    async def similar(self, movie_id: int, first: int) -> list[tuple[int, float]]:
        """Movies most alike by content and the model's item representations (``ml.similarity``;
        those added since training by content), cached per model version and catalog
        generation; retired movies leave at once."""
        served = self._served()
        model = served.model
        view = await self.view(served)
        [index] = model.item_index([movie_id])
        [added] = view.overlay.index([movie_id])
        if index < 0 and added < 0:
            raise NotFound(f"movie {movie_id} is not in the catalog the model serves")
        catalog = (await self.generations.get("catalog", [0]))[0]

        async def compute(keys: list[int]) -> dict[int, Hits]:
            if index < 0:  # added since training: by content alone
                query = np.asarray(view.overlay.vectors[added])
                hits = model.search(query, self.max_hits, ~view.facts.retired)
                return {keys[0]: _with_overlay(model, hits, view, query, self.max_hits, movie_id)}
            # content and the model's item representations together (ml.similarity), off the loop
            column = int(index)
            hits = await asyncio.to_thread(
                similarity.neighbours, model, column, self.max_hits, ~view.facts.retired
            )
            query = np.asarray(model.item_embeddings[column])
            scale = functools.partial(similarity.on_served_scale, model, column)
            return {keys[0]: _with_overlay(model, hits, view, query, self.max_hits, movie_id, scale)}

        [found] = await self.cache.get_many(
            SIMILAR, [movie_id], lambda m: f"{m}:{served.version}:{catalog}", compute
        )
        return _first(found, first)

    async def search(self, query: str, first: int) -> list[tuple[int, float]]:
        """Semantic search over the content embeddings (of movies added since training too),
        cached per (query, model version, catalog generation)."""
        served = self._served()
        model = served.model
        view = await self.view(served)
        catalog = (await self.generations.get("catalog", [0]))[0]

        async def compute(keys: list[str]) -> dict[str, Hits]:
            vector = np.asarray((await asyncio.to_thread(embeddings.encode, [query]))[0])
            hits = model.search(vector, self.max_hits, ~view.facts.retired)
            return {keys[0]: _with_overlay(model, hits, view, vector, self.max_hits)}

        digest = hashlib.sha256(query.encode()).hexdigest()[:24]
        [found] = await self.cache.get_many(
            SEARCH, [query], lambda _: f"{digest}:{served.version}:{catalog}", compute
        )
        return _first(found, first)

    async def _recommend(
        self, served: Served, requests: Sequence[RecRequest], read: History
    ) -> tuple[list[list[Recommended]], set[int]]:
        """Each request's page, and the users whose lists the learned ranker ordered. Reads
        happen here; every step whose work grows with the request (filters over the catalog,
        scoring, the overlay, diversity, deep pages) runs in one call off the event loop, so
        that a heavy list never holds other requests up."""
        view = await self.view(served)
        return await asyncio.to_thread(self._rank_pages, served.model, view, requests, read)

    def _rank_pages(
        self, model: HybridRecommender, view: CatalogView, requests: Sequence[RecRequest], read: History
    ) -> tuple[list[list[Recommended]], set[int]]:
        users = read.users  # each user once, in the order of the requests
        row_of = {u: i for i, u in enumerate(users)}
        rows = np.array([row_of[r.user_id] for r in requests])  # each user scored once, ranked per request
        history = read.matrix()
        allowed = np.stack([self.allowed(model, view.facts, r, read) for r in requests])
        exclude = np.array([r.exclude_rated for r in requests])
        k = max(pool_size(r) for r in requests)
        top, values = self._score_batch(model, history, model.user_index(users), k, exclude, rows, allowed)
        added = self.added(model, view, history, requests, rows, read)
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
            if request.diversity:
                picked = mmr(found[0], scores, request.offset + request.first, request.diversity)
                ids, scores = ids[picked], scores[picked]
            page = slice(request.offset, request.offset + request.first)
            answers.append(
                [
                    Recommended(int(m), float(v), rank)
                    for rank, (m, v) in enumerate(
                        zip(ids[page], scores[page], strict=True), start=request.offset + 1
                    )
                ]
            )
        return answers, {users[i] for i in model.ranked_rows(history)}

    @staticmethod
    def added(
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
    def allowed(model: HybridRecommender, facts: ItemFacts, request: RecRequest, read: History) -> np.ndarray:
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

    def scores(self, model: HybridRecommender, history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        """(batch, n_items): one scoring call, counted in the batch metrics."""
        self.metrics.score_batches.inc()
        self.metrics.score_batch_size.observe(history.shape[0])
        return model.score(history, users)

    def _score_batch(
        self,
        model: HybridRecommender,
        history: sp.csr_matrix,
        users: np.ndarray,
        k: int,
        exclude: np.ndarray,
        rows: np.ndarray,
        allowed: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        self.metrics.score_batches.inc()
        self.metrics.score_batch_size.observe(history.shape[0])
        return model.recommend(history, users, k, exclude_rated=exclude, rows=rows, allowed=allowed)

    async def _popular(self, requests: Sequence[RecRequest], read: History) -> list[list[Recommended]]:
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

    async def _rerank(
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
