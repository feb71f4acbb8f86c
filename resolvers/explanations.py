"""Explanation resolvers: one batch per request for `Recommendation.explanation`, a stream
for the `explanation` subscription (who may stream is the subscription's permission)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.serving.explanations import Chunk, Explained
    from graphql_schema.context import Context
    from ml.llm.evidence import Evidence


async def explanation(ctx: Context, *, user_id: int, movie_id: int) -> Explained:
    found, served = await ctx.loaders.explanations.load((user_id, movie_id))
    ctx.served.explanations = served
    return found


async def evidence(ctx: Context, *, user_id: int, movie_id: int) -> list[Evidence]:
    """The facts an explanation rests on, from the user's ratings; no LLM runs for them."""
    return await ctx.loaders.evidence.load((user_id, movie_id))


def stream(ctx: Context, *, user_id: int, movie_id: int) -> AsyncIterator[Chunk]:
    return ctx.services.explanations.stream(user_id=user_id, movie_id=movie_id)
