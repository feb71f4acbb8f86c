"""Per-request dataloaders: each batch of keys is one SQL statement on its own session."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from strawberry.dataloader import DataLoader

from app.services import ratings
from app.services.explanations import Explained, ExplanationService, ExplanationsServed
from app.services.recommendations import RecommendationService, Recommended, RecRequest, ServedBy

if TYPE_CHECKING:
    from sqlalchemy import Row
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from app.state import AppState

K = TypeVar("K")
V = TypeVar("V")


def _loader(
    sessions: async_sessionmaker[AsyncSession],
    fetch: Callable[..., Awaitable[dict[K, V]]],
    default: Callable[[], V | None],
) -> DataLoader[K, V | None]:
    """Uncached reads (user data), one statement per batch."""

    async def batch(keys: Sequence[K]) -> list[V | None]:
        async with sessions() as session:
            found = await fetch(session=session, keys=list(dict.fromkeys(keys)))
        return [found.get(k, default()) for k in keys]

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
    sessions, reader = app.sessions, app.catalog
    return Loaders(
        movie=DataLoader(load_fn=reader.movies),
        genres=DataLoader(load_fn=reader.genres),
        tags=DataLoader(load_fn=reader.tags),
        link=DataLoader(load_fn=reader.links),
        user=DataLoader(load_fn=app.users.users),
        ratings_count=_loader(
            sessions,
            lambda session, keys: ratings.ratings_count_by_user_ids(session=session, user_ids=keys),
            int,
        ),
        recommendations=_recommendations_loader(app.recommendations),
        explanations=_explanations_loader(app.explanations),
    )
