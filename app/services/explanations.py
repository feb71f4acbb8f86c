"""The LLM's two jobs in a request: rerank the recommender's top candidates, and explain a
recommendation from evidence the engine can show.

Both go through one batch per request. Neither may fail a request: if the LLM errors or
times out, the recommender's order stands and the explanation comes from the template,
with the reason reported beside the answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from app.metrics import LLM_FALLBACKS
from app.services import catalog
from app.services.recommendations import Recommended, rated_by
from ml.llm.backends import ExplainRequest, LLMError, ScoreRequest
from ml.llm.evidence import Evidence, gather_evidence
from ml.llm.prompts import LIKED_THRESHOLD, candidate_text, profile_from_ratings
from ml.llm.rerank import blend
from ml.llm.template import template_explanation

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.llm import ServedLLM
    from ml.hybrid import HybridRecommender

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Explained:
    text: str
    evidence: list[Evidence]
    source: str  # "llm" or "template"
    error: str | None = None


def label(row: Any) -> str:
    return f"{row.title} ({row.year})" if row.year else str(row.title)


@dataclass
class _CatalogFacts:
    titles: dict[int, str]
    genres: dict[int, list[str]]
    stats: dict[int, tuple[float | None, int | None]]  # mean rating and count


async def _facts(session: AsyncSession, movie_ids: Sequence[int]) -> _CatalogFacts:
    ids = list(dict.fromkeys(movie_ids))
    rows = await catalog.movies_by_ids(session=session, movie_ids=ids)
    genres = await catalog.genres_by_movie_ids(session=session, movie_ids=ids)
    stats = {
        m: (r.rating_sum / r.ratings_count, r.ratings_count) if r.ratings_count else (None, None)
        for m, r in rows.items()
    }
    return _CatalogFacts({m: label(r) for m, r in rows.items()}, dict(genres), stats)


def _embeddings(model: HybridRecommender | None, movie_ids: Sequence[int]) -> dict[int, np.ndarray]:
    if model is None or not len(movie_ids):
        return {}
    index = model.item_index(list(movie_ids))
    return {m: model.item_embeddings[i] for m, i in zip(movie_ids, index, strict=True) if i >= 0}


def _profile_movies(rated: list[tuple[int, float]], n_liked: int = 10, n_disliked: int = 5) -> list[int]:
    ordered = sorted(rated, key=lambda mr: -mr[1])
    return [m for m, _ in ordered[:n_liked]] + [m for m, _ in ordered[::-1][:n_disliked]]


# -- explanations -----------------------------------------------------------------------


async def explanation_inputs(
    *, session: AsyncSession, model: HybridRecommender | None, pairs: Sequence[tuple[int, int]]
) -> list[tuple[ExplainRequest, list[Evidence]]]:
    """For each (user, movie): the request for the LLM and the evidence it carries."""
    users = list(dict.fromkeys(u for u, _ in pairs))
    rated = await rated_by(session=session, user_ids=users)
    liked = {u: [(m, r) for m, r in rated[u] if r > LIKED_THRESHOLD] for u in users}
    movies = [m for _, m in pairs] + [m for u in users for m, _ in liked[u]]
    facts = await _facts(session, movies)
    embedding_of = _embeddings(model, list(dict.fromkeys(movies)))
    out = []
    for user, movie in pairs:
        evidence = gather_evidence(
            candidate=movie,
            rated=liked[user],
            embedding_of=embedding_of,
            titles=facts.titles,
            genres=facts.genres,
        )
        title = facts.titles.get(movie, f"movie {movie}")
        out.append((ExplainRequest(title, [e.reason for e in evidence]), evidence))
    return out


def fallback_reason(reason: str, error: Exception) -> str:
    LLM_FALLBACKS.labels(reason=reason).inc()
    log.warning("LLM %s failed, template instead: %s", reason, error)
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


async def explain_many(
    *, served: ServedLLM, inputs: Sequence[tuple[ExplainRequest, list[Evidence]]], timeout_s: float
) -> list[Explained]:
    """All explanations as one batch; the template for every one if the LLM fails or times out."""
    requests = [r for r, _ in inputs]
    if served.backend.name == "none":
        return [Explained(template_explanation(r), e, "template") for r, e in inputs]
    try:
        texts = await asyncio.wait_for(served.backend.explain_many(requests), timeout_s)
    except (LLMError, TimeoutError) as exc:
        error = fallback_reason("explain", exc)
        return [Explained(template_explanation(r), e, "template", error) for r, e in inputs]
    return [Explained(t, e, "llm") for t, (_, e) in zip(texts, inputs, strict=True)]


# -- rerank -----------------------------------------------------------------------------


async def rerank(
    *,
    session: AsyncSession,
    served: ServedLLM,
    users: Sequence[int],
    answers: Sequence[list[Recommended]],
    rated: dict[int, list[tuple[int, float]]],
    timeout_s: float,
) -> tuple[list[list[Recommended]], str | None]:
    """Each answer's candidates reordered by the blend of the recommender's score and the
    LLM's P(Yes), all pairs scored in one batch. ``rated`` holds the users' ratings, as read
    for the recommendations. On failure the order stands; the error is returned for the
    response's extensions."""
    todo = [i for i, a in enumerate(answers) if len(a) > 1]
    if not todo or not served.backend.can_score or served.rerank_weight <= 0:
        return list(answers), None
    movies = [r.movie_id for i in todo for r in answers[i]]
    movies += [m for u in {users[i] for i in todo} for m in _profile_movies(rated[u])]
    facts = await _facts(session, movies)
    requests = []
    for i in todo:
        everything = rated[users[i]]
        titled = [(facts.titles[m], r) for m, r in everything if m in facts.titles]
        # titles only for the movies the prompt names; the like rate over all the user's ratings
        profile = replace(
            profile_from_ratings(titled),
            liked_count=sum(r > LIKED_THRESHOLD for _, r in everything),
            rated_count=len(everything),
        )
        texts = [
            candidate_text(
                facts.titles.get(r.movie_id, f"movie {r.movie_id}"),
                facts.genres.get(r.movie_id, []),
                *facts.stats.get(r.movie_id, (None, None)),
            )
            for r in answers[i]
        ]
        requests.append(ScoreRequest(profile, texts))
    try:
        probabilities = await asyncio.wait_for(served.backend.score(requests), timeout_s)
    except (LLMError, TimeoutError) as exc:
        return list(answers), fallback_reason("rerank", exc)
    out = list(answers)
    for i, p_yes in zip(todo, probabilities, strict=True):
        scores = np.array([r.score for r in answers[i]])
        blended = blend(scores, p_yes, served.rerank_weight)
        order = np.argsort(-blended, kind="stable")
        out[i] = [
            Recommended(answers[i][j].movie_id, float(blended[j]), rank)
            for rank, j in enumerate(order, start=1)
        ]
    return out, None
