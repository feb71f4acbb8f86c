"""Recommendation, similarity, search and model-admin resolvers."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from app.infra.errors import BadUserInput, Forbidden, NotFound
from app.serving.filters import NO_FILTER, RecFilter
from app.serving.pipeline import Recommended, RecRequest
from app.serving.recommendations import ServedBy
from resolvers.pagination import check_first

if TYPE_CHECKING:
    from sqlalchemy import Row

    from app.infra.auth import Principal
    from graphql_schema.context import Context
    from ml.registry import ModelVersionInfo


@dataclass(frozen=True)
class RecommendationPage:
    """One list as answered: what was asked, the items, and what served them (for each item's
    cursor and id)."""

    request: RecRequest | None  # None: not a list that pages go on from (a home page's row)
    items: list[Recommended]
    served: ServedBy
    user_id: int


async def recommendations(
    ctx: Context,
    *,
    user_id: int,
    first: int,
    exclude_rated: bool,
    filter: RecFilter = NO_FILTER,
    after: str | None = None,
    diversity: float = 0.0,
) -> RecommendationPage:
    check_first(first, ctx.settings.max_recommendations)
    if not 0 <= diversity <= 1:  # also refuses NaN
        raise BadUserInput(f"diversity must be between 0 and 1, got {diversity}", field="diversity")
    if await ctx.loaders.user.load(user_id) is None:
        raise NotFound(f"user {user_id} does not exist")
    request = RecRequest(user_id, first, exclude_rated, filter, 0, diversity)
    if after is not None:
        request = replace(request, offset=ctx.services.recommendations.offset(after, request))
    answer, served_by = await ctx.loaders.recommendations.load(request)
    ctx.served.recommender = served_by
    return RecommendationPage(request, answer, served_by, user_id)


def rec_filter(
    *,
    any_genres: list[str] | None = None,
    all_genres: list[str] | None = None,
    year_from: int | None = None,
    year_to: int | None = None,
    min_ratings: int | None = None,
    exclude_movie_ids: list[int] | None = None,
    include_dismissed: bool = False,
) -> RecFilter:
    return RecFilter(
        tuple(any_genres or ()),
        tuple(all_genres or ()),
        year_from,
        year_to,
        min_ratings,
        tuple(sorted(set(exclude_movie_ids or ()))),
        include_dismissed,
    )


def cursor(ctx: Context, page: RecommendationPage, rank: int) -> str | None:
    if page.request is None:
        return None
    return ctx.services.recommendations.cursor(page.request, page.served.version, rank)


def recommendation_id(ctx: Context, page: RecommendationPage, movie_id: int, rank: int) -> str:
    return ctx.services.recommendations.recommendation_id(page.user_id, movie_id, rank, page.served)


async def home_page(
    ctx: Context, *, user_id: int
) -> tuple[list[tuple[str, str, RecommendationPage]], ServedBy]:
    """The rows of a user's home page: (title, kind, the row as a list) each."""
    if await ctx.loaders.user.load(user_id) is None:
        raise NotFound(f"user {user_id} does not exist")
    page = await ctx.services.home.page(user_id, per_row=ROW_LENGTH)
    ctx.served.recommender = page.served
    rows = [(r.title, r.kind, RecommendationPage(None, r.items, page.served, user_id)) for r in page.rows]
    return rows, page.served


ROW_LENGTH = 20  # the longest row a home page holds


async def similar_movies(ctx: Context, *, movie_id: int, first: int) -> list[Row[Any]]:
    """The similar movies' rows, read in one batch."""
    check_first(first, ctx.settings.max_recommendations)
    found = await ctx.services.movie_search.similar(movie_id, first)
    rows = await ctx.loaders.movie.load_many([m for m, _ in found])
    return [row for row in rows if row is not None]


async def search_movies(ctx: Context, *, query: str, first: int) -> list[tuple[int, float]]:
    check_first(first, ctx.settings.max_recommendations)
    if not query.strip() or len(query) > 500:
        raise BadUserInput("query must be 1 to 500 characters", field="query")
    return await ctx.services.movie_search.search(query, first)


async def model_versions(ctx: Context, *, model: str = "recommender") -> list[ModelVersionInfo]:
    return await ctx.services.models.versions(model)


async def promote(ctx: Context, *, version: str, alias: str, model: str = "recommender") -> ModelVersionInfo:
    return await ctx.services.models.promote(model, version=version, alias=alias)


async def rollback(ctx: Context, *, alias: str, model: str = "recommender") -> ModelVersionInfo:
    return await ctx.services.models.rollback(model, alias=alias)


async def record_click(ctx: Context, *, principal: Principal, recommendation_id: str) -> bool:
    shown = ctx.services.recommendations.read_recommendation_id(recommendation_id)
    if shown.user_id != principal.user_id and not principal.is_admin:
        raise Forbidden("that recommendation was shown to another user")
    return await ctx.services.experiments.record_click(shown)
