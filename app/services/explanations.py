"""Explanations of recommendations: all of a request's as one batch, or one streamed as the
LLM writes it. Neither may fail a request: if the LLM errors or times out, the template over
the same evidence answers (``Fallback``), and the reason is reported beside the text.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.errors import NotFound, RateLimited
from app.services import catalog, ratings
from app.services.llm_inputs import explanation_inputs
from ml.llm.backends import Overloaded
from ml.llm.template import template_explanation

if TYPE_CHECKING:
    from app.llm import ServedLLM
    from app.serving import ServingParts
    from ml.llm.evidence import Evidence

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Explained:
    text: str
    evidence: list[Evidence]
    source: str  # "llm" or "template"
    error: str | None = None


@dataclass(frozen=True)
class Chunk:
    text: str
    done: bool
    evidence: list[Evidence] | None
    source: str
    error: str | None = None


@dataclass(frozen=True)
class ExplanationsServed:
    """What wrote a request's explanations, for the response's ``extensions.explanations``."""

    served: dict[str, str]  # the serving LLM's description (backend, model, version)
    source: str
    error: str | None = None

    def extension(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.served, "source": self.source}
        if self.error:
            out["error"] = self.error
        return out


class ExplanationService:
    def __init__(self, parts: ServingParts) -> None:
        self.sessions = parts.sessions
        self.models = parts.models
        self.llm = parts.llm
        self.fallback = parts.fallback
        self.metrics = parts.metrics

    async def _inputs(self, pairs: Sequence[tuple[int, int]]) -> list[tuple[Any, list[Evidence]]]:
        served = self.models.current
        async with self.sessions() as session:
            return await explanation_inputs(
                session=session, model=served.model if served else None, pairs=pairs
            )

    async def explain(self, pairs: Sequence[tuple[int, int]]) -> tuple[list[Explained], ExplanationsServed]:
        """All explanations of a request as one batch; the template for every one if the LLM
        fails or runs out of time."""
        served = self.llm.current
        inputs = await self._inputs(pairs)
        backend = served.backend
        texts, error = await self.fallback.call("explain", backend.explain_many([r for r, _ in inputs]))
        if texts is None:
            out = [Explained(template_explanation(r), e, "template", error) for r, e in inputs]
            return out, ExplanationsServed(served.describe(), "template", error)
        out = [Explained(t, e, backend.source) for t, (_, e) in zip(texts, inputs, strict=True)]
        return out, ExplanationsServed(served.describe(), backend.source)

    async def stream(self, *, user_id: int, movie_id: int) -> AsyncIterator[Chunk]:
        """Chunks as the LLM writes; the template if it fails before its first piece."""
        async with self.sessions() as session:
            if not await ratings.users_by_ids(session=session, user_ids=[user_id]):
                raise NotFound(f"user {user_id} does not exist")
            if not await catalog.movies_by_ids(session=session, movie_ids=[movie_id]):
                raise NotFound(f"movie {movie_id} does not exist")
        served: ServedLLM = self.llm.current
        [(request, evidence)] = await self._inputs([(user_id, movie_id)])
        self.metrics.llm_streams.inc()
        try:
            pieces = served.backend.stream(request)
            sent = False
            async with contextlib.aclosing(pieces):  # type: ignore[type-var]
                while True:
                    try:
                        piece, error = await self.fallback.call(
                            "stream", anext(pieces), raise_overloaded=True
                        )
                    except StopAsyncIteration:
                        break
                    except Overloaded as exc:
                        raise RateLimited(str(exc), retryAfterSeconds=1, retryAfter=1) from exc
                    if piece is None:
                        if not sent:
                            text = template_explanation(request)
                            yield Chunk(text, False, evidence, "template", error)
                            yield Chunk("", True, evidence, "template", error)
                        else:  # part of the text is out: end it honestly rather than start a second one
                            yield Chunk("", True, evidence, served.backend.source, error)
                        return
                    yield Chunk(piece, False, None if sent else evidence, served.backend.source)
                    sent = True
            yield Chunk("", True, evidence, served.backend.source)
        finally:
            self.metrics.llm_streams.dec()
