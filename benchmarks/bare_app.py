"""The baseline for the HTTP benchmark: bare Starlette JSON endpoints doing the same lookups
through the same services (same SQL) as the GraphQL fields, without GraphQL."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.cache import ReadThroughCache, keep_catalog_warm, warm_catalog
from app.db import create_engine, session_factory
from app.services import catalog
from app.settings import get_settings


def _movie(row, genres: list[str]) -> dict:
    return {
        "movieId": row.movie_id,
        "title": row.title,
        "year": row.year,
        "genres": genres,
        "ratingsCount": row.ratings_count,
        "averageRating": row.rating_sum / row.ratings_count if row.ratings_count else None,
    }


def _fetch(request: Request, service):  # the same read-through cache and SQL as the GraphQL loaders
    async def fetch(keys: list[int]) -> dict:
        async with request.app.state.sessions() as session:
            return await service(session=session, movie_ids=keys)

    return fetch


async def movie(request: Request) -> JSONResponse:
    movie_id = int(request.query_params["id"])
    cache = request.app.state.cache
    [row] = await cache.get_many("movie", [movie_id], _fetch(request, catalog.movies_by_ids), None)
    [genres] = await cache.get_many("genres", [movie_id], _fetch(request, catalog.genres_by_movie_ids), [])
    return JSONResponse({"movie": _movie(row, genres) if row else None})


async def movies(request: Request) -> JSONResponse:
    first = int(request.query_params.get("first", 20))
    async with request.app.state.sessions() as session:
        page = await catalog.movie_page(
            session=session,
            query=catalog.MovieQuery(),
            sort=catalog.MovieSort.POPULARITY,
            descending=None,
            after=None,
            limit=first,
        )
    ids = [r.movie_id for r in page.rows]
    genres = await request.app.state.cache.get_many(
        "genres", ids, _fetch(request, catalog.genres_by_movie_ids), []
    )
    return JSONResponse({"movies": [_movie(r, g) for r, g in zip(page.rows, genres, strict=True)]})


def create_app() -> Starlette:
    settings = get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.engine = create_engine(settings)
        app.state.sessions = session_factory(app.state.engine)
        app.state.cache = ReadThroughCache(ttl=settings.cache_ttl_seconds)
        await warm_catalog(app.state.cache, app.state.sessions, limit=settings.cache_warm_movies)
        gc.freeze()  # the same collector settings as the real app
        warm = asyncio.create_task(
            keep_catalog_warm(
                app.state.cache,
                app.state.sessions,
                every=settings.cache_ttl_seconds / 2,
                limit=settings.cache_warm_movies,
            )
        )
        yield
        warm.cancel()
        await app.state.engine.dispose()

    return Starlette(routes=[Route("/movie", movie), Route("/movies", movies)], lifespan=lifespan)
