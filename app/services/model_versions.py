"""Registered versions of the two models (the recommender and the LLM adapter) and the
aliases that point at them: what an admin sees and moves."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from app.errors import BadUserInput, NotFound
from ml.registry import LLM, RECOMMENDER, RegistryError

if TYPE_CHECKING:
    from app.holders import ChampionHolder, RecommenderHolder
    from app.llm import LLMHolder
    from ml.registry import ModelVersionInfo


class ModelVersions:
    """Each model kind ("recommender" or "llm") is served by its holder: a promotion swaps the
    new version in before it answers, and other replicas follow the announcement."""

    def __init__(self, recommender: RecommenderHolder, llm: LLMHolder) -> None:
        self._holders: dict[str, ChampionHolder] = {"recommender": recommender, "llm": llm}  # type: ignore[type-arg]
        self._names = {"recommender": RECOMMENDER, "llm": LLM}

    async def versions(self, kind: str) -> list[ModelVersionInfo]:
        return await asyncio.to_thread(self._holders[kind].registry.versions, self._names[kind])

    async def promote(self, kind: str, *, version: str, alias: str) -> ModelVersionInfo:
        try:
            return await self._holders[kind].promote(version, alias)
        except RegistryError as exc:
            raise NotFound(str(exc)) from exc

    async def rollback(self, kind: str, *, alias: str) -> ModelVersionInfo:
        try:
            return await self._holders[kind].rollback(alias)
        except RegistryError as exc:
            raise BadUserInput(str(exc), field="alias") from exc
