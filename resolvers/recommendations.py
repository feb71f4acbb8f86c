"""Recommendation, similarity, search and model-admin resolvers."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from app.errors import BadUserInput, NotFound
from app.services.recommendations import Recommended, RecRequest
from ml.registry import LLM, RECOMMENDER, ModelVersionInfo, RegistryError
from resolvers.pagination import check_first

if TYPE_CHECKING:
    from app.llm import LLMHolder
    from app.serving import RecommenderHolder
    from graphql_schema.context import Context


async def recommendations(
    ctx: Context, *, user_id: int, first: int, exclude_rated: bool
) -> list[Recommended]:
    check_first(first, ctx.settings.max_recommendations)
    if await ctx.loaders.user.load(user_id) is None:
        raise NotFound(f"user {user_id} does not exist")
    answer, served_by = await ctx.loaders.recommendations.load(RecRequest(user_id, first, exclude_rated))
    ctx.served.recommender = served_by
    return answer


async def similar_movies(ctx: Context, *, movie_id: int, first: int) -> list[tuple[int, float]]:
    check_first(first, ctx.settings.max_recommendations)
    return await ctx.app.recommendations.similar(movie_id, first)


async def search_movies(ctx: Context, *, query: str, first: int) -> list[tuple[int, float]]:
    check_first(first, ctx.settings.max_recommendations)
    if not query.strip() or len(query) > 500:
        raise BadUserInput("query must be 1 to 500 characters", field="query")
    return await ctx.app.recommendations.search(query, first)


# The GraphQL ModelKind values, and the registered model each names.
_KINDS = {"recommender": RECOMMENDER, "llm": LLM}


def _holder(ctx: Context, kind: str) -> RecommenderHolder | LLMHolder:
    return ctx.llm if _KINDS[kind] == LLM else ctx.models


async def model_versions(ctx: Context, *, model: str = "recommender") -> list[ModelVersionInfo]:
    return await asyncio.to_thread(_holder(ctx, model).registry.versions, _KINDS[model])


async def promote(ctx: Context, *, version: str, alias: str, model: str = "recommender") -> ModelVersionInfo:
    try:
        return await _holder(ctx, model).promote(version, alias)
    except RegistryError as exc:
        raise NotFound(str(exc)) from exc


async def rollback(ctx: Context, *, alias: str, model: str = "recommender") -> ModelVersionInfo:
    try:
        return await _holder(ctx, model).rollback(alias)
    except RegistryError as exc:
        raise BadUserInput(str(exc), field="alias") from exc
