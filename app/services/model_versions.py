"""Registered versions of the two models (the recommender and the LLM adapter) and the
aliases that point at them: what an admin sees and moves."""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING

from app.infra.errors import BadUserInput, NotFound
from ml.registry import LLM, RECOMMENDER, RegistryError

if TYPE_CHECKING:
    from app.serving.champions import ChampionHolder, RecommenderHolder
    from app.serving.llm_holder import LLMHolder
    from ml.registry import ModelVersionInfo


# What MLflow takes as an alias, less its reserved names ("latest", "v1"...), in ASCII: any
# other alias would reach MLflow and come back as an error of its own.
_ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_RESERVED = re.compile(r"latest|v\d+", re.IGNORECASE)


def _checked(*, alias: str, version: str | None = None) -> None:
    if not _ALIAS.fullmatch(alias) or _RESERVED.fullmatch(alias):
        raise BadUserInput(
            "an alias is 1 to 64 ASCII letters, digits, '_' or '-', starting with a letter "
            "(not 'latest' or 'v' and a number)",
            field="alias",
        )
    if version is not None and not (version.isascii() and version.isdigit() and len(version) <= 9):
        raise BadUserInput('a version is a number such as "3"', field="version")


class ModelVersions:
    """Each model kind ("recommender" or "llm") is served by its holder: a promotion swaps the
    new version in before it answers, and other replicas follow the announcement."""

    def __init__(self, recommender: RecommenderHolder, llm: LLMHolder) -> None:
        self._holders: dict[str, ChampionHolder] = {"recommender": recommender, "llm": llm}  # type: ignore[type-arg]
        self._names = {"recommender": RECOMMENDER, "llm": LLM}

    async def versions(self, kind: str) -> list[ModelVersionInfo]:
        return await asyncio.to_thread(self._holders[kind].registry.versions, self._names[kind])

    async def promote(self, kind: str, *, version: str, alias: str) -> ModelVersionInfo:
        _checked(alias=alias, version=version)
        try:
            return await self._holders[kind].promote(version, alias)
        except RegistryError as exc:
            raise NotFound(str(exc)) from exc

    async def rollback(self, kind: str, *, alias: str) -> ModelVersionInfo:
        _checked(alias=alias)
        try:
            return await self._holders[kind].rollback(alias)
        except RegistryError as exc:
            raise BadUserInput(str(exc), field="alias") from exc
