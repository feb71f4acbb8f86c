"""Explanation resolvers: one batch per request for `Recommendation.explanation`, a token
stream for the `explanation` subscription."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.errors import Forbidden, NotFound, RateLimited
from app.metrics import LLM_STREAMS
from app.services.explanations import Explained, explanation_inputs, fallback_reason
from ml.llm.backends import LLMError, Overloaded
from ml.llm.template import template_explanation

if TYPE_CHECKING:
    from graphql_schema.context import Context
    from ml.llm.evidence import Evidence


async def explanation(ctx: Context, *, user_id: int, movie_id: int) -> Explained:
    found = await ctx.loaders.explanations.load((user_id, movie_id))
    if ctx.llm is not None:
        info = {**ctx.llm.current.describe(), "source": found.source}
        if found.error:
            info["error"] = found.error
        ctx.extra["explanations"] = info
    return found


@dataclass(frozen=True)
class Chunk:
    text: str
    done: bool
    evidence: list[Evidence] | None
    source: str
    error: str | None = None


async def stream(ctx: Context, *, user_id: int, movie_id: int) -> AsyncIterator[Chunk]:
    """Chunks as the LLM writes; the template if it fails before its first token."""
    principal = ctx.require_principal()
    if not principal.may_read_user(user_id):
        raise Forbidden("you may stream explanations only for yourself")
    if await ctx.loaders.user.load(user_id) is None:
        raise NotFound(f"user {user_id} does not exist")
    if await ctx.loaders.movie.load(movie_id) is None:
        raise NotFound(f"movie {movie_id} does not exist")
    assert ctx.llm is not None
    served = ctx.llm.current
    model = ctx.models.current.model if ctx.models is not None and ctx.models.current else None
    async with ctx.sessions() as session:
        [(request, evidence)] = await explanation_inputs(
            session=session, model=model, pairs=[(user_id, movie_id)]
        )
    timeout = ctx.settings.llm_timeout_seconds
    LLM_STREAMS.inc()
    try:
        if served.backend.name == "none":
            yield Chunk(template_explanation(request), False, evidence, "template")
            yield Chunk("", True, evidence, "template")
            return
        pieces = served.backend.stream(request)
        sent = False
        try:
            async with contextlib.aclosing(pieces):  # type: ignore[type-var]
                while True:
                    try:
                        piece = await asyncio.wait_for(anext(pieces), timeout)
                    except StopAsyncIteration:
                        break
                    yield Chunk(piece, False, None if sent else evidence, "llm")
                    sent = True
        except Overloaded as exc:
            raise RateLimited(str(exc)) from exc
        except (LLMError, TimeoutError) as exc:
            error = fallback_reason("stream", exc)
            if not sent:
                yield Chunk(template_explanation(request), False, evidence, "template", error)
                yield Chunk("", True, evidence, "template", error)
            else:  # part of the text is out: end it honestly rather than start a second one
                yield Chunk("", True, evidence, "llm", error)
            return
        yield Chunk("", True, evidence, "llm")
    finally:
        LLM_STREAMS.dec()
