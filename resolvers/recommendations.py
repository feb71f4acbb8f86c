"""Recommendation, similarity, search and model-admin resolvers."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import numpy as np

from app.errors import BadUserInput, NotFound
from app.services.recommendations import Recommended, RecRequest
from ml import embeddings
from ml.registry import LLM, RECOMMENDER, ModelVersionInfo, RegistryError
from resolvers.pagination import check_first

if TYPE_CHECKING:
    from app.llm import LLMHolder
    from app.serving import RecommenderHolder, Served
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


def _served(ctx: Context) -> Served:
    served = ctx.models.current if ctx.models is not None else None
    if served is None:
        raise NotFound("no trained model yet: run `cinerec train`")
    return served


async def similar_movies(ctx: Context, *, movie_id: int, first: int) -> list[tuple[int, float]]:
    check_first(first, ctx.settings.max_recommendations)
    model = _served(ctx).model
    [index] = model.item_index([movie_id])
    if index < 0:
        raise NotFound(f"movie {movie_id} is not in the model's catalog")
    top, scores = model.similar(int(index), first)
    return [(int(model.item_ids[i]), float(s)) for i, s in zip(top, scores, strict=True)]


async def search_movies(ctx: Context, *, query: str, first: int) -> list[tuple[int, float]]:
    check_first(first, ctx.settings.max_recommendations)
    if not query.strip() or len(query) > 500:
        raise BadUserInput("query must be 1 to 500 characters", field="query")
    model = _served(ctx).model
    vector = (await asyncio.to_thread(embeddings.encode, [query]))[0]
    top, scores = model.search(np.asarray(vector), first)
    return [(int(model.item_ids[i]), float(s)) for i, s in zip(top, scores, strict=True)]


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
