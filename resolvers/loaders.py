"""Per-request dataloaders: each batch of keys is one SQL statement on its own session."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from strawberry.dataloader import DataLoader

from app.services import catalog, ratings
from app.services.explanations import Explained, explain_many, explanation_inputs, rerank
from app.services.recommendations import Recommended, RecRequest, rated_by, recommend_many

if TYPE_CHECKING:
    from sqlalchemy import Row
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from app.cache import ReadThroughCache
    from app.llm import LLMHolder
    from app.serving import ModelHolder
    from app.settings import Settings

# What answered a recommendation: {"version": "3"} or the popularity fallback and why, and
# whether the LLM reranked (or why not).
ServedBy = dict[str, Any]

K = TypeVar("K")
V = TypeVar("V")


def _loader(
    sessions: async_sessionmaker[AsyncSession],
    fetch: Callable[..., Awaitable[dict[K, V]]],
    default: Callable[[], V | None],
    cache: ReadThroughCache | None = None,
    namespace: str = "",
) -> DataLoader[K, V | None]:
    async def query(keys: list[K]) -> dict[K, V]:
        async with sessions() as session:
            return await fetch(session=session, keys=keys)

    async def batch(keys: Sequence[K]) -> list[V | None]:
        if cache is not None:
            return await cache.get_many(namespace, keys, query, default())
        found = await query(list(dict.fromkeys(keys)))
        return [found.get(k, default()) for k in keys]

    return DataLoader(load_fn=batch)


def _tags_loader(
    sessions: async_sessionmaker[AsyncSession], cache: ReadThroughCache | None
) -> DataLoader[tuple[int, int], list[str]]:
    async def query(keys: list[tuple[int, int]]) -> dict[tuple[int, int], list[str]]:
        by_first: dict[int, list[int]] = {}
        for movie_id, first in keys:
            by_first.setdefault(first, []).append(movie_id)
        found: dict[tuple[int, int], list[str]] = {}
        async with sessions() as session:
            for first, movie_ids in by_first.items():
                tags = await catalog.tags_by_movie_ids(session=session, movie_ids=movie_ids, first=first)
                found.update({(m, first): tags.get(m, []) for m in movie_ids})
        return found

    async def batch(keys: Sequence[tuple[int, int]]) -> list[list[str]]:
        if cache is not None:
            return await cache.get_many("tags", keys, query, [])
        found = await query(list(dict.fromkeys(keys)))
        return [found[k] for k in keys]

    return DataLoader(load_fn=batch)


def _recommendations_loader(
    sessions: async_sessionmaker[AsyncSession],
    models: ModelHolder | None,
    llm: LLMHolder | None,
    settings: Settings | None,
) -> DataLoader[RecRequest, tuple[list[Recommended], ServedBy]]:
    async def batch(keys: Sequence[RecRequest]) -> list[tuple[list[Recommended], ServedBy]]:
        served = models.current if models is not None else None  # one model for the whole batch
        served_llm = llm.current if llm is not None else None
        by: ServedBy = (
            {"model": "cinerec-recommender", "version": served.version}
            if served
            else {"model": "popularity", "reason": "no trained model yet: run `cinerec train`"}
        )
        pool = settings.llm_rerank_candidates if settings is not None else 0
        use_llm = bool(served and served_llm and served_llm.rerank_weight > 0 and pool)
        wide = [RecRequest(k.user_id, max(k.first, pool), k.exclude_rated) for k in keys] if use_llm else keys
        async with sessions() as session:
            # The users' ratings, read once for the recommender and the rerank prompts.
            rated = await rated_by(session=session, user_ids=list(dict.fromkeys(k.user_id for k in keys)))
            answers = await recommend_many(
                session=session, model=served.model if served else None, requests=wide, rated=rated
            )
            if use_llm:
                assert served_llm is not None and settings is not None
                # Rerank the top `pool` candidates, then keep what each request asked for.
                answers, error = await rerank(
                    session=session,
                    served=served_llm,
                    users=[k.user_id for k in keys],
                    answers=[a[:pool] for a in answers],
                    rated=rated,
                    timeout_s=settings.llm_timeout_seconds,
                )
                by = {**by, "rerank": {**served_llm.describe(), "weight": served_llm.rerank_weight}}
                if error:
                    by["rerank"]["error"] = error
        return [(a[: k.first], by) for a, k in zip(answers, keys, strict=True)]

    return DataLoader(load_fn=batch)


def _explanations_loader(
    sessions: async_sessionmaker[AsyncSession],
    models: ModelHolder | None,
    llm: LLMHolder | None,
    settings: Settings | None,
) -> DataLoader[tuple[int, int], Explained]:
    async def batch(keys: Sequence[tuple[int, int]]) -> list[Explained]:
        assert llm is not None and settings is not None
        served = models.current if models is not None else None
        async with sessions() as session:
            inputs = await explanation_inputs(
                session=session, model=served.model if served else None, pairs=keys
            )
        return await explain_many(served=llm.current, inputs=inputs, timeout_s=settings.llm_timeout_seconds)

    return DataLoader(load_fn=batch)


@dataclass
class Loaders:
    movie: DataLoader[int, Row[Any] | None]
    genres: DataLoader[int, list[str] | None]
    tags: DataLoader[tuple[int, int], list[str]]
    link: DataLoader[int, Row[Any] | None]
    user: DataLoader[int, Row[Any] | None]
    ratings_count: DataLoader[int, int | None]
    recommendations: DataLoader[RecRequest, tuple[list[Recommended], ServedBy]]
    explanations: DataLoader[tuple[int, int], Explained]


def create_loaders(
    sessions: async_sessionmaker[AsyncSession],
    models: ModelHolder | None = None,
    cache: ReadThroughCache | None = None,
    llm: LLMHolder | None = None,
    settings: Settings | None = None,
) -> Loaders:
    """Fresh loaders for one request (never shared: their own memo is per request). Catalog
    loaders read through the app's ``cache``; user data is never cached across requests."""
    return Loaders(
        movie=_loader(
            sessions,
            lambda session, keys: catalog.movies_by_ids(session=session, movie_ids=keys),
            lambda: None,
            cache,
            "movie",
        ),
        genres=_loader(
            sessions,
            lambda session, keys: catalog.genres_by_movie_ids(session=session, movie_ids=keys),
            list,
            cache,
            "genres",
        ),
        tags=_tags_loader(sessions, cache),
        link=_loader(
            sessions,
            lambda session, keys: catalog.links_by_movie_ids(session=session, movie_ids=keys),
            lambda: None,
            cache,
            "link",
        ),
        user=_loader(
            sessions, lambda session, keys: ratings.users_by_ids(session=session, user_ids=keys), lambda: None
        ),
        ratings_count=_loader(
            sessions,
            lambda session, keys: ratings.ratings_count_by_user_ids(session=session, user_ids=keys),
            int,
        ),
        recommendations=_recommendations_loader(sessions, models, llm, settings),
        explanations=_explanations_loader(sessions, models, llm, settings),
    )
