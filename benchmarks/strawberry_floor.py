"""The floor of the GraphQL library itself: a minimal Strawberry app (one `movie` field read
from a dict, the parser and validation caches on, nothing else), to compare with cinerec's
own execution in the same run.

    uvicorn benchmarks.strawberry_floor:app --port N
"""

from __future__ import annotations

import strawberry
from starlette.applications import Starlette
from starlette.routing import Route
from strawberry.asgi import GraphQL
from strawberry.extensions import ParserCache, ValidationCache

MOVIES = {
    i: {
        "movie_id": i,
        "title": f"Movie {i}",
        "year": 1990 + i % 30,
        "genres": ["Drama"],
        "ratings_count": i,
        "average_rating": 3.5,
    }
    for i in range(1, 70_000)
}


@strawberry.type
class Movie:
    movie_id: int
    title: str
    year: int | None
    genres: list[str]
    ratings_count: int
    average_rating: float | None


@strawberry.type
class Query:
    @strawberry.field
    async def movie(self, movie_id: int) -> Movie | None:
        found = MOVIES.get(movie_id)
        return Movie(**found) if found else None


schema = strawberry.Schema(query=Query, extensions=[ParserCache(maxsize=1024), ValidationCache(maxsize=1024)])
app = Starlette(routes=[Route("/graphql", GraphQL(schema), methods=["GET", "POST"])])
