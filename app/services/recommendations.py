"""Recommendations for a batch of requests: one read of the users' ratings, one scoring call,
and, where the LLM's rerank was shown to help, one batched rerank of the top candidates.

Scoring reads each user's ratings at request time, so a rating made a moment ago already
counts (fold-in), with or without retraining.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
from sqlalchemy import select

from app.batching import Coalescer
from app.cache import Kind
from app.errors import NotFound
from app.models import Movie
from app.services.llm_inputs import Ratings, preference_requests
from ml import embeddings
from ml.llm.rerank import blend
from ml.registry import RECOMMENDER

if TYPE_CHECKING:
    from app.holders import Served
    from app.llm import ServedLLM
    from app.services.experiments import ExperimentService
    from app.services.histories import History
    from app.services.parts import ServingParts
    from ml.hybrid import HybridRecommender

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


@dataclass(frozen=True)
class ServedBy:
    """What answered a batch: a model version or the popularity fallback (and why), and the
    LLM's rerank when it took part (with its error, if it failed and the order stood)."""

    version: str | None
    reason: str | None = None
    rerank: dict[str, Any] | None = None
    experiment: str | None = None  # the A/B experiment the user is in, and their arm
    arm: str | None = None

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
        return out


NO_MODEL = ServedBy(None, "no trained model yet: run `cinerec train`")


def _encode_answer(value: tuple[list[Recommended], ServedBy]) -> Any:
    answers, by = value
    served = [by.version, by.reason, by.rerank, by.experiment, by.arm]
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


class RecommendationService:
    def __init__(self, parts: ServingParts, *, rerank_candidates: int, max_hits: int = 100) -> None:
        self.max_hits = max_hits  # the longest similar or search list anyone may ask for
        self.sessions = parts.sessions
        self.models = parts.models
        self.llm = parts.llm
        self.fallback = parts.fallback
        self.metrics = parts.metrics
        self.histories = parts.histories
        self.cache = parts.cache
        self.generations = parts.generations
        self.pool = rerank_candidates
        self.experiments: ExperimentService | None = None
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

        def key(r: RecRequest) -> str:
            model_key = versions[r.user_id] or "popularity"
            return (
                f"{r.user_id}:{gens[r.user_id]}:{model_key}:{llm_key}:{r.first}:{int(r.exclude_rated)}{trial}"
            )

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
        # with a rerank, the top `pool` are scored and reordered; each request then keeps its `first`
        wide = (
            [RecRequest(r.user_id, max(r.first, self.pool), r.exclude_rated) for r in requests]
            if use_llm
            else requests
        )
        by = NO_MODEL if served is None else ServedBy(served.version)
        # one read of the users' ratings: scoring takes the matrix, the rerank's prompts the pairs
        history = await self.histories.read(served.model if served else None, [r.user_id for r in requests])
        if served is None:
            answers = await self._popular(wide, history.pairs())
        else:
            answers = await self._recommend(served.model, wide, history)
        if use_llm:
            answers, error = await self._rerank(served_llm, requests, answers, history.pairs())
            rerank = {**served_llm.describe(), "weights": served_llm.rerank_weights.describe()}
            if error:
                rerank["error"] = error
            by = ServedBy(by.version, rerank=rerank)
        return [(a[: r.first], by) for a, r in zip(answers, requests, strict=True)]

    def _model(self) -> HybridRecommender:
        served = self.models.current
        if served is None:
            raise NotFound("no trained model yet: run `cinerec train`")
        return served.model

    async def similar(self, movie_id: int, first: int) -> list[tuple[int, float]]:
        """Movies most alike in content, cached per model version."""
        served = self.models.current
        model = self._model()
        [index] = model.item_index([movie_id])
        if index < 0:
            raise NotFound(f"movie {movie_id} is not in the model's catalog")

        async def compute(keys: list[int]) -> dict[int, Hits]:
            return {keys[0]: _hits(model, *model.similar(int(index), self.max_hits))}

        version = served.version if served else "-"
        [found] = await self.cache.get_many(SIMILAR, [movie_id], lambda m: f"{m}:{version}", compute)
        return _first(found, first)

    async def search(self, query: str, first: int) -> list[tuple[int, float]]:
        """Semantic search over the content embeddings, cached per (query, model version)."""
        served = self.models.current
        model = self._model()

        async def compute(keys: list[str]) -> dict[str, Hits]:
            vector = (await asyncio.to_thread(embeddings.encode, [query]))[0]
            return {keys[0]: _hits(model, *model.search(np.asarray(vector), self.max_hits))}

        version = served.version if served else "-"
        digest = hashlib.sha256(query.encode()).hexdigest()[:24]
        [found] = await self.cache.get_many(SEARCH, [query], lambda _: f"{digest}:{version}", compute)
        return _first(found, first)

    async def _recommend(
        self, model: HybridRecommender, requests: Sequence[RecRequest], read: History
    ) -> list[list[Recommended]]:
        users = read.users  # each user once, in the order of the requests
        row_of = {u: i for i, u in enumerate(users)}
        rows = np.array([row_of[r.user_id] for r in requests])  # each user scored once, ranked per request
        history = read.matrix()
        exclude = np.array([r.exclude_rated for r in requests])
        k = max(r.first for r in requests)
        # Off the event loop: numpy releases the GIL, other requests keep being served.
        top, values = await asyncio.to_thread(
            self._score_batch, model, history, model.user_index(users), k, exclude, rows
        )
        answers = []
        for request, items, scores in zip(requests, top, values, strict=True):
            keep = np.isfinite(scores[: request.first])
            answers.append(
                [
                    Recommended(int(model.item_ids[i]), float(v), rank)
                    for rank, (i, v) in enumerate(
                        zip(items[: request.first][keep], scores[: request.first][keep], strict=True), start=1
                    )
                ]
            )
        return answers

    def _score_batch(
        self,
        model: HybridRecommender,
        history: sp.csr_matrix,
        users: np.ndarray,
        k: int,
        exclude: np.ndarray,
        rows: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        self.metrics.score_batches.inc()
        self.metrics.score_batch_size.observe(history.shape[0])
        return model.recommend(history, users, k, exclude_rated=exclude, rows=rows)

    async def _popular(self, requests: Sequence[RecRequest], rated: Ratings) -> list[list[Recommended]]:
        """Most-rated movies: the answer before any model is trained."""
        need = max(r.first for r in requests) + max((len(v) for v in rated.values()), default=0)
        stmt = (
            select(movies.c.movie_id, movies.c.ratings_count)
            .order_by(movies.c.ratings_count.desc(), movies.c.movie_id)
            .limit(need)
        )
        async with self.sessions() as session:
            popular = (await session.execute(stmt)).all()
        answers = []
        for request in requests:
            seen = {m for m, _ in rated[request.user_id]} if request.exclude_rated else set()
            picks = [(m, float(np.log1p(c))) for m, c in popular if m not in seen][: request.first]
            answers.append([Recommended(m, s, rank) for rank, (m, s) in enumerate(picks, start=1)])
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
