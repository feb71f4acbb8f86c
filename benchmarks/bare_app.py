"""The baseline for the HTTP benchmark: bare Starlette JSON endpoints doing the same lookups
through the same services (same SQL) as the GraphQL fields, without GraphQL."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

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


async def movie(request: Request) -> JSONResponse:
    movie_id = int(request.query_params["id"])
    async with request.app.state.sessions() as session:
        rows = await catalog.movies_by_ids(session=session, movie_ids=[movie_id])
    async with request.app.state.sessions() as session:
        genres = await catalog.genres_by_movie_ids(session=session, movie_ids=[movie_id])
    row = rows.get(movie_id)
    return JSONResponse({"movie": _movie(row, genres.get(movie_id, [])) if row else None})


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
    async with request.app.state.sessions() as session:
        genres = await catalog.genres_by_movie_ids(session=session, movie_ids=ids)
    return JSONResponse({"movies": [_movie(r, genres.get(r.movie_id, [])) for r in page.rows]})


def create_app() -> Starlette:
    settings = get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.engine = create_engine(settings)
        app.state.sessions = session_factory(app.state.engine)
        yield
        await app.state.engine.dispose()

    return Starlette(routes=[Route("/movie", movie), Route("/movies", movies)], lifespan=lifespan)
