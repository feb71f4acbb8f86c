"""Recommendation, similarity, search and model-admin resolvers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.errors import BadUserInput, NotFound
from app.services.recommendations import Recommended, RecRequest
from resolvers.pagination import check_first

if TYPE_CHECKING:
    from sqlalchemy import Row

    from graphql_schema.context import Context
    from ml.registry import ModelVersionInfo


async def recommendations(
    ctx: Context, *, user_id: int, first: int, exclude_rated: bool
) -> list[Recommended]:
    check_first(first, ctx.settings.max_recommendations)
    if await ctx.loaders.user.load(user_id) is None:
        raise NotFound(f"user {user_id} does not exist")
    answer, served_by = await ctx.loaders.recommendations.load(RecRequest(user_id, first, exclude_rated))
    ctx.served.recommender = served_by
    return answer


async def similar_movies(ctx: Context, *, movie_id: int, first: int) -> list[Row[Any]]:
    """The similar movies' rows, read in one batch."""
    check_first(first, ctx.settings.max_recommendations)
    found = await ctx.services.recommendations.similar(movie_id, first)
    rows = await ctx.loaders.movie.load_many([m for m, _ in found])
    return [row for row in rows if row is not None]


async def search_movies(ctx: Context, *, query: str, first: int) -> list[tuple[int, float]]:
    check_first(first, ctx.settings.max_recommendations)
    if not query.strip() or len(query) > 500:
        raise BadUserInput("query must be 1 to 500 characters", field="query")
    return await ctx.services.recommendations.search(query, first)


async def model_versions(ctx: Context, *, model: str = "recommender") -> list[ModelVersionInfo]:
    return await ctx.services.models.versions(model)


async def promote(ctx: Context, *, version: str, alias: str, model: str = "recommender") -> ModelVersionInfo:
    return await ctx.services.models.promote(model, version=version, alias=alias)


async def rollback(ctx: Context, *, alias: str, model: str = "recommender") -> ModelVersionInfo:
    return await ctx.services.models.rollback(model, alias=alias)
