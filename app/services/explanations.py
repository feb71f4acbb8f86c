"""Explanations of recommendations: all of a request's as one batch, or one streamed as the
LLM writes it. Neither may fail a request: if the LLM errors or times out, the template over
the same evidence answers (``Fallback``), and the reason is reported beside the text.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.cache import Kind
from app.errors import NotFound, RateLimited
from app.services import catalog, ratings
from app.services.llm_inputs import explanation_inputs
from ml.llm.backends import Overloaded
from ml.llm.evidence import Evidence
from ml.llm.template import template_explanation

if TYPE_CHECKING:
    from app.llm import ServedLLM
    from app.serving import ServingParts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Explained:
    text: str
    evidence: list[Evidence]
    source: str  # "llm" or "template"
    error: str | None = None


def _encode(value: Explained) -> Any:
    return [
        value.text,
        [[e.movie_id, e.reason, e.similarity] for e in value.evidence],
        value.source,
        value.error,
    ]


def _decode(value: Any) -> Explained:
    text, evidence, source, error = value
    return Explained(text, [Evidence(int(m), r, float(s)) for m, r, s in evidence], source, error)


# What the LLM wrote is cached; a template that stood in is not (the next request tries again).
EXPLANATIONS = Kind("explanations", 3600, True, _encode, _decode, keep=lambda v: v.source == "llm")


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
        self.histories = parts.histories
        self.cache = parts.cache
        self.generations = parts.generations

    async def _inputs(self, pairs: Sequence[tuple[int, int]]) -> list[tuple[Any, list[Evidence]]]:
        served = self.models.current
        model = served.model if served else None
        rated = await self.histories.of(model, [u for u, _ in pairs])
        async with self.sessions() as session:
            return await explanation_inputs(session=session, model=model, pairs=pairs, rated=rated)

    async def explain(self, pairs: Sequence[tuple[int, int]]) -> tuple[list[Explained], ExplanationsServed]:
        """All explanations of a request as one batch; the template for every one if the LLM
        fails or runs out of time. What the LLM wrote is cached per (user, movie), the user's
        generation and the adapter version; a template answer is not cached."""
        async with self.llm.lease() as served:
            return await self._explain(served, pairs)

    async def _explain(
        self, served: ServedLLM, pairs: Sequence[tuple[int, int]]
    ) -> tuple[list[Explained], ExplanationsServed]:
        gens = await self.generations.get("user", [u for u, _ in pairs])
        model = self.models.current
        version = f"{model.version if model else '-'}:{served.backend.name}:{served.version or 'base'}"
        failures: list[str] = []

        async def compute(missing: list[tuple[int, int]]) -> dict[tuple[int, int], Explained]:
            inputs = await self._inputs(missing)
            backend = served.backend
            texts, error = await self.fallback.call("explain", backend.explain_many([r for r, _ in inputs]))
            if texts is None:
                failures.append(error or "the LLM failed")
                return {
                    p: Explained(template_explanation(r), e, "template", error)
                    for p, (r, e) in zip(missing, inputs, strict=True)
                }
            return {
                p: Explained(t, e, backend.source)
                for p, t, (_, e) in zip(missing, texts, inputs, strict=True)
            }

        found = await self.cache.get_many(
            EXPLANATIONS, pairs, lambda p: f"{p[0]}:{p[1]}:{gens[p[0]]}:{version}", compute
        )
        if failures:
            return found, ExplanationsServed(served.describe(), "template", failures[0])
        return found, ExplanationsServed(served.describe(), served.backend.source)

    async def stream(self, *, user_id: int, movie_id: int) -> AsyncIterator[Chunk]:
        """Chunks as the LLM writes; the template if it fails before its first piece."""
        async with self.sessions() as session:
            if not await ratings.users_by_ids(session=session, user_ids=[user_id]):
                raise NotFound(f"user {user_id} does not exist")
            if not await catalog.movies_by_ids(session=session, movie_ids=[movie_id]):
                raise NotFound(f"movie {movie_id} does not exist")
        [(request, evidence)] = await self._inputs([(user_id, movie_id)])
        self.metrics.llm_streams.inc()
        async with (
            self.llm.lease() as served,
            contextlib.aclosing(self._stream(served, request, evidence)) as chunks,
        ):
            async for chunk in chunks:
                yield chunk

    async def _stream(
        self, served: ServedLLM, request: Any, evidence: list[Evidence]
    ) -> AsyncGenerator[Chunk, None]:
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
