"""Movie resolvers: lookups by key through the loaders, and keyset-paginated pages."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.infra.errors import BadUserInput
from app.services import catalog
from app.services.catalog_changes import MovieDraft
from resolvers.pagination import check_first, decode_cursor, encode_cursor

if TYPE_CHECKING:
    from sqlalchemy import Row

    from app.infra.auth import Principal
    from graphql_schema.context import Context


@dataclass(frozen=True)
class Page:
    """One page of a connection: (cursor, row) edges and a lazy total count."""

    edges: list[tuple[str, Row[Any]]]
    has_next: bool
    has_previous: bool
    total: Callable[[], Awaitable[int]]


async def movie(ctx: Context, *, movie_id: int) -> Row[Any] | None:
    return await ctx.loaders.movie.load(movie_id)


_CURSOR_KINDS: dict[catalog.MovieSort, type | tuple[type, ...]] = {
    catalog.MovieSort.POPULARITY: int,
    catalog.MovieSort.AVERAGE_RATING: (int, float),
    catalog.MovieSort.YEAR: int,
    catalog.MovieSort.TITLE: str,
}


def _cursor_tag(sort: catalog.MovieSort, descending: bool | None) -> str:
    return f"{sort.value}:{ {None: 'natural', True: 'desc', False: 'asc'}[descending] }"


async def movies(
    ctx: Context,
    *,
    first: int,
    after: str | None,
    order: str,
    descending: bool | None,
    genre: str | None = None,
    year_from: int | None = None,
    year_to: int | None = None,
    title_contains: str | None = None,
    min_ratings: int | None = None,
) -> Page:
    """A page of movies; ``order`` is a ``catalog.MovieSort`` value (the GraphQL enum's value)."""
    check_first(first, ctx.settings.max_page_size)
    query = catalog.MovieQuery(
        genre=genre,
        year_from=year_from,
        year_to=year_to,
        title_contains=title_contains,
        min_ratings=min_ratings,
    )
    sort = catalog.MovieSort(order)
    # The sort travels in the cursor, so a cursor cannot be replayed under another order.
    position = None
    if after is not None:
        name, value, movie_id = decode_cursor(after, (str, _CURSOR_KINDS[sort], int))
        if name != _cursor_tag(sort, descending):
            raise BadUserInput("cursor belongs to another ordering", field="after")
        position = (value, movie_id)

    async def total() -> int:
        return await ctx.services.catalog.count(query)

    if first == 0:
        return Page([], False, position is not None, total)
    page = await ctx.services.catalog.page(
        query, sort=sort, descending=descending, after=position, limit=first
    )
    tag = _cursor_tag(sort, descending)
    edges = [(encode_cursor(tag, v, r.movie_id), r) for r, v in zip(page.rows, page.sort_values, strict=True)]
    for _, row in edges:  # prime the loader: a later movie(movieId) in the same request costs nothing
        ctx.loaders.movie.prime(row.movie_id, row)
    return Page(edges, page.has_next, position is not None, total)


async def genres(ctx: Context, *, movie_id: int) -> list[str]:
    return await ctx.loaders.genres.load(movie_id) or []


async def tags(ctx: Context, *, movie_id: int, first: int) -> list[str]:
    check_first(first, ctx.settings.max_page_size)
    return await ctx.loaders.tags.load((movie_id, first)) if first else []


async def link(ctx: Context, *, movie_id: int) -> Row[Any] | None:
    return await ctx.loaders.link.load(movie_id)


async def my_rating(ctx: Context, *, movie_id: int) -> float | None:
    if ctx.principal is None and ctx.auth_error is None:
        return None  # signed out: nobody's rating to show
    principal = ctx.require_principal()
    if principal.is_key:
        return None  # a service's key has no ratings of its own
    return await ctx.loaders.own_rating.load((principal.user_id, movie_id))


async def all_genres(ctx: Context) -> list[str]:
    return await ctx.services.catalog.genre_names()


def _draft(given: Any) -> MovieDraft:
    def listed(values: list[str] | None) -> tuple[str, ...] | None:
        return tuple(values) if values is not None else None

    return MovieDraft(
        given.title, given.year, listed(given.genres), listed(given.tags), given.imdb_id, given.tmdb_id
    )


async def _fresh(ctx: Context, movie_id: int) -> Row[Any]:
    with contextlib.suppress(KeyError):
        ctx.loaders.movie.clear(movie_id)  # the request's own memo held it before the change
    row = await ctx.loaders.movie.load(movie_id)
    assert row is not None
    return row


async def add_movie(ctx: Context, *, principal: Principal, movie: Any) -> Row[Any]:
    movie_id = await ctx.services.catalog_changes.add(_draft(movie), by_user=principal.user_id)
    return await _fresh(ctx, movie_id)


async def update_movie(ctx: Context, *, principal: Principal, movie_id: int, patch: Any) -> Row[Any]:
    await ctx.services.catalog_changes.update(movie_id, _draft(patch), by_user=principal.user_id)
    return await _fresh(ctx, movie_id)


async def retire_movie(ctx: Context, *, movie_id: int) -> Row[Any]:
    await ctx.services.catalog_changes.retire(movie_id)
    return await _fresh(ctx, movie_id)
