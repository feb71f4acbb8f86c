"""Per-request dataloaders over the services: each batch of keys is one call (one statement,
or one scoring batch)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from strawberry.dataloader import DataLoader

if TYPE_CHECKING:
    from sqlalchemy import Row

    from app.services.services import Services
    from app.serving.explanations import Explained, ExplanationService, ExplanationsServed
    from app.serving.pipeline import Recommended, RecRequest
    from app.serving.recommendations import RecommendationService, ServedBy
    from ml.llm.evidence import Evidence


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


class Loaders:
    """Fresh loaders for one request (never shared: their own memo is per request), each made
    on its first use: most requests touch one or two, and making all eight took 9% of an
    executed `movie` lookup (benchmarks/profile_path.py). Catalog loaders read through the
    app's cache; user data is never cached across requests."""

    def __init__(self, services: Services) -> None:
        self._services = services

    @cached_property
    def movie(self) -> DataLoader[int, Row[Any] | None]:
        return DataLoader(load_fn=self._services.catalog.movies)

    @cached_property
    def genres(self) -> DataLoader[int, list[str] | None]:
        return DataLoader(load_fn=self._services.catalog.genres)

    @cached_property
    def tags(self) -> DataLoader[tuple[int, int], list[str]]:
        return DataLoader(load_fn=self._services.catalog.tags)

    @cached_property
    def link(self) -> DataLoader[int, Row[Any] | None]:
        return DataLoader(load_fn=self._services.catalog.links)

    @cached_property
    def user(self) -> DataLoader[int, Row[Any] | None]:
        return DataLoader(load_fn=self._services.users.users)

    @cached_property
    def ratings_count(self) -> DataLoader[int, int]:
        return DataLoader(load_fn=self._services.users.ratings_counts)

    @cached_property
    def own_rating(self) -> DataLoader[tuple[int, int], float | None]:
        return DataLoader(load_fn=self._services.users.own_ratings)

    @cached_property
    def recommendations(self) -> DataLoader[RecRequest, tuple[list[Recommended], ServedBy]]:
        return _recommendations_loader(self._services.recommendations)

    @cached_property
    def evidence(self) -> DataLoader[tuple[int, int], list[Evidence]]:
        return DataLoader(load_fn=self._services.explanations.evidence)

    @cached_property
    def explanations(self) -> DataLoader[tuple[int, int], tuple[Explained, ExplanationsServed]]:
        return _explanations_loader(self._services.explanations)


def create_loaders(services: Services) -> Loaders:
    return Loaders(services)
