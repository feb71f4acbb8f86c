"""Per-request dataloaders: each batch of keys is one SQL statement on its own session."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from strawberry.dataloader import DataLoader

from app.services import catalog, ratings
from app.services.explanations import Explained, ExplanationService, ExplanationsServed
from app.services.recommendations import RecommendationService, Recommended, RecRequest, ServedBy

if TYPE_CHECKING:
    from sqlalchemy import Row
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from app.cache import ReadThroughCache
    from app.state import AppState

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
    service: RecommendationService,
) -> DataLoader[RecRequest, tuple[list[Recommended], ServedBy]]:
    return DataLoader(load_fn=service.answer)


def _explanations_loader(
    service: ExplanationService,
) -> DataLoader[tuple[int, int], tuple[Explained, ExplanationsServed]]:
    async def batch(keys: Sequence[tuple[int, int]]) -> list[tuple[Explained, ExplanationsServed]]:
        found, served = await service.explain(keys)
        return [(f, served) for f in found]

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
    explanations: DataLoader[tuple[int, int], tuple[Explained, ExplanationsServed]]


def create_loaders(app: AppState) -> Loaders:
    """Fresh loaders for one request (never shared: their own memo is per request). Catalog
    loaders read through the app's cache; user data is never cached across requests."""
    sessions, cache = app.sessions, app.cache
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
        recommendations=_recommendations_loader(app.recommendations),
        explanations=_explanations_loader(app.explanations),
    )
