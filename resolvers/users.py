"""User, account and rating resolvers."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from app.services import ratings
from resolvers.movies import Page
from resolvers.pagination import check_first, decode_cursor, encode_cursor

if TYPE_CHECKING:
    from sqlalchemy import Row

    from app.infra.auth import Principal
    from graphql_schema.context import Context


async def user(ctx: Context, *, user_id: int) -> Row[Any] | None:
    return await ctx.loaders.user.load(user_id)


async def ratings_count(ctx: Context, *, user_id: int) -> int:
    return await ctx.loaders.ratings_count.load(user_id)


async def user_ratings(ctx: Context, *, user_id: int, first: int, after: str | None) -> Page:
    check_first(first, ctx.settings.max_page_size)
    position = tuple(decode_cursor(after, (int, int))) if after is not None else None

    async def total() -> int:
        return await ratings_count(ctx, user_id=user_id)

    if first == 0:
        return Page([], False, position is not None, total)
    page = await ctx.services.users.ratings(user_id, after=position, limit=first)  # type: ignore[arg-type]
    edges = [(encode_cursor(r.timestamp, r.movie_id), r) for r in page.rows]
    return Page(edges, page.has_next, position is not None, total)


async def dismissed_movies(ctx: Context, *, user_id: int, first: int) -> list[int]:
    check_first(first, ctx.settings.max_page_size)
    return await ctx.services.users.dismissed(user_id, limit=first)


async def register(ctx: Context, *, email: str, password: str) -> tuple[str, Principal]:
    return await ctx.services.accounts.register(email=email, password=password, client=ctx.client)


async def login(ctx: Context, *, email: str, password: str) -> tuple[str, Principal]:
    return await ctx.services.accounts.login(email=email, password=password, client=ctx.client)


async def logout(ctx: Context, *, principal: Principal) -> None:
    await ctx.services.accounts.sign_out(principal)


async def rate_movie(
    ctx: Context, *, principal: Principal, movie_id: int, rating: float
) -> ratings.RatingRow:
    row = await ctx.services.users.rate(user_id=principal.user_id, movie_id=movie_id, rating=rating)
    with contextlib.suppress(KeyError):  # the request's own memo, when it holds the movie
        ctx.loaders.movie.clear(movie_id)
    return row


async def delete_rating(ctx: Context, *, principal: Principal, movie_id: int) -> Row[Any]:
    await ctx.services.users.delete_rating(user_id=principal.user_id, movie_id=movie_id)
    with contextlib.suppress(KeyError):
        ctx.loaders.movie.clear(movie_id)  # the request's own memo: its statistics moved
    row = await ctx.loaders.movie.load(movie_id)
    assert row is not None  # it was rated a moment ago
    return row


async def dismiss(ctx: Context, *, principal: Principal, movie_id: int, dismissed: bool) -> bool:
    return await ctx.services.users.dismiss(user_id=principal.user_id, movie_id=movie_id, dismissed=dismissed)
