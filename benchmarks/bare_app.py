"""The baseline for the HTTP benchmark: bare Starlette JSON endpoints doing the same lookups
through the same services (same caches, same SQL) as the GraphQL fields, without GraphQL.
The app's own state is opened and started as ``cinerec serve`` opens it."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.infra.metrics import Metrics
from app.infra.settings import get_settings
from app.server.factory import open_state, start, stop
from app.services.catalog import MovieQuery, MovieSort


def _movie(row: Any, genres: list[str]) -> dict:
    return {
        "movieId": row.movie_id,
        "title": row.title,
        "year": row.year,
        "genres": genres,
        "ratingsCount": row.ratings_count,
        "averageRating": row.rating_sum / row.ratings_count if row.ratings_count else None,
    }


async def movie(request: Request) -> JSONResponse:
    movie_id = int(request.query_params["id"])
    catalog = request.app.state.cinerec.services.catalog
    [row] = await catalog.movies([movie_id])
    [genres] = await catalog.genres([movie_id])
    return JSONResponse({"movie": _movie(row, genres) if row else None})


async def movies(request: Request) -> JSONResponse:
    first = int(request.query_params.get("first", 20))
    catalog = request.app.state.cinerec.services.catalog
    page = await catalog.page(
        MovieQuery(), sort=MovieSort.POPULARITY, descending=None, after=None, limit=first
    )
    genres = await catalog.genres([r.movie_id for r in page.rows])
    return JSONResponse({"movies": [_movie(r, g) for r, g in zip(page.rows, genres, strict=True)]})


def create_app() -> Starlette:
    settings = get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state = app.state.cinerec = open_state(settings, Metrics())
        tasks = await start(state)
        gc.freeze()  # the same collector settings as the real app
        try:
            yield
        finally:
            await stop(state, tasks)

    return Starlette(routes=[Route("/movie", movie), Route("/movies", movies)], lifespan=lifespan)
