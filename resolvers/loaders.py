"""Per-request dataloaders over the services: each batch of keys is one call (one statement,
or one scoring batch)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from strawberry.dataloader import DataLoader

if TYPE_CHECKING:
    from sqlalchemy import Row

    from app.services.bundle import Services
    from app.services.explanations import Explained, ExplanationService, ExplanationsServed
    from app.services.recommendations import RecommendationService, Recommended, RecRequest, ServedBy


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
    ratings_count: DataLoader[int, int]
    recommendations: DataLoader[RecRequest, tuple[list[Recommended], ServedBy]]
    explanations: DataLoader[tuple[int, int], tuple[Explained, ExplanationsServed]]


def create_loaders(services: Services) -> Loaders:
    """Fresh loaders for one request (never shared: their own memo is per request). Catalog
    loaders read through the app's cache; user data is never cached across requests."""
    catalog, users = services.catalog, services.users
    return Loaders(
        movie=DataLoader(load_fn=catalog.movies),
        genres=DataLoader(load_fn=catalog.genres),
        tags=DataLoader(load_fn=catalog.tags),
        link=DataLoader(load_fn=catalog.links),
        user=DataLoader(load_fn=users.users),
        ratings_count=DataLoader(load_fn=users.ratings_counts),
        recommendations=_recommendations_loader(services.recommendations),
        explanations=_explanations_loader(services.explanations),
    )
