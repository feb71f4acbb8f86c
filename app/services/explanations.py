"""Explanations of recommendations: all of a request's as one batch, or one streamed as the
LLM writes it. Neither may fail a request: if the LLM errors or times out, the template over
the same evidence answers (``Fallback``), and the reason is reported beside the text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.cache import Kind
from app.errors import NotFound, RateLimited
from app.services import catalog, ratings
from app.services.llm_inputs import explanation_inputs
from ml.llm.backends import Overloaded
from ml.llm.evidence import Evidence
from ml.llm.faithfulness import CLAUSE_END, TitleIndex, check, ends_sentence, fix_articles, vet
from ml.llm.prompts import explanation_opening
from ml.llm.template import template_explanation

# a sentence the text so far ends with: a full stop after a word (not "L.A." or "4.", which may
# go on), or "!" / "?"; CLAUSE_END waits for the space after it, one decoding step later
ENDED_NOW = re.compile(r"(?:(?<!\b[A-Z])(?<![\d.])\.|[!?])$")

if TYPE_CHECKING:
    from app.llm import ServedLLM
    from app.services.parts import ServingParts

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


UNSUPPORTED = "unsupported claim"


def _keep(value: Explained) -> bool:
    # What the LLM wrote is cached, and so is a template that replaced a text the checker
    # refused (the model would write it again); a template that stood in for a failure or a
    # timeout is not (the next request tries again).
    return value.source == "llm" or (value.error or "").startswith(UNSUPPORTED)


EXPLANATIONS = Kind("explanations", 3600, True, _encode, _decode, keep=_keep)


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
        self._titles: tuple[int, TitleIndex] | None = None

    @property
    def written_by_llm(self) -> bool:
        """Whether explanations come from an LLM now (the template costs nothing to write)."""
        return self.llm.current.backend.source == "llm"

    async def titles(self) -> TitleIndex:
        """Every catalog title, for finding titles in what the LLM wrote; rebuilt when the
        catalog's generation moves (an ingest)."""
        generation = (await self.generations.get("catalog", [0]))[0]
        if self._titles is None or self._titles[0] != generation:
            async with self.sessions() as session:
                names = await catalog.all_titles(session=session)
            self._titles = (generation, await asyncio.to_thread(TitleIndex, names))
        return self._titles[1]

    def vet(self, text: str, request: Any, titles: TitleIndex) -> tuple[str, str | None]:
        """What of an LLM text may reach a client: its whole sentences before the first claim the
        facts do not support; "" and that claim when none of the model's own sentences holds."""
        if request.facts is None:
            return text, None
        kept, verdict = vet(text, request.facts, titles, explanation_opening(request))
        for claim in verdict.claims:
            self.metrics.unsupported_claims.labels(kind=claim.kind).inc()
        self.metrics.explanations.labels(source="llm" if kept else "template").inc()
        if verdict.supported and kept:
            return kept, None
        reason = (
            f"{UNSUPPORTED}: {verdict.claims[0]}"
            if verdict.claims
            else "the model wrote nothing past the opening"
        )
        return kept, reason

    async def _inputs(self, pairs: Sequence[tuple[int, int]]) -> list[tuple[Any, list[Evidence]]]:
        served = self.models.current
        model = served.model if served else None
        rated = await self.histories.of(model, [u for u, _ in pairs])
        async with self.sessions() as session:
            return await explanation_inputs(session=session, model=model, pairs=pairs, rated=rated)

    async def evidence(self, pairs: Sequence[tuple[int, int]]) -> list[list[Evidence]]:
        """The facts each explanation would rest on, without writing one (no LLM)."""
        return [found for _, found in await self._inputs(pairs)]

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
                self.metrics.explanations.labels(source="template").inc(len(missing))
                return {
                    p: Explained(template_explanation(r), e, "template", error)
                    for p, (r, e) in zip(missing, inputs, strict=True)
                }
            titles = await self.titles()
            out = {}
            for p, t, (r, e) in zip(missing, texts, inputs, strict=True):
                if backend.source != "llm":
                    self.metrics.explanations.labels(source=backend.source).inc()
                    out[p] = Explained(t, e, backend.source)
                    continue
                kept, claim = self.vet(t, r, titles)
                # a cut text says why; a refused one is the template, with the claim it refused
                out[p] = (
                    Explained(fix_articles(kept), e, "llm", claim)
                    if kept
                    else Explained(template_explanation(r), e, "template", claim)
                )
            return out

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
        """The LLM's text, sentence by sentence, each sent once the text so far holds (its
        closing mark is held back: it opens the next chunk, or becomes the full stop when a
        later clause makes a claim the facts do not hold and the stream ends there). Claims are
        looked for at every clause end, so a stream stops at the first one."""
        source = served.backend.source
        facts = request.facts if source == "llm" else None
        titles = await self.titles() if facts is not None else None
        written, sent_upto, sent, claim, model_sent = "", 0, False, None, False
        checked_upto = 0  # claims are looked for clause by clause; text goes out by sentences
        # the server's opening is not the model's: the model's text is sent sentence by sentence once
        # it holds. An opening that states the closest evidence is true as it stands: it goes
        # out at once, marked as the server's (TEMPLATE), so the first words never wait.
        opening = explanation_opening(request) if facts is not None else ""
        floor = len(opening)
        tail = ", and"

        def model_chunk(text: str) -> Chunk:
            """Model-written text that holds, as served (articles made right); the first chunk
            sent carries the evidence."""
            return Chunk(fix_articles(text), False, None if sent else evidence, source)

        try:
            if facts is not None and facts.evidence and opening.endswith(tail):
                sent_upto = floor - len(tail)
                yield Chunk(opening[:sent_upto], False, evidence, "template")
                sent = True
            pieces = served.backend.stream(request)
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
                            who = source if model_sent or facts is None else "template"
                            if facts is not None and not written[:sent_upto].rstrip().endswith(
                                (".", "!", "?")
                            ):
                                yield Chunk(".", False, None, who)
                            yield Chunk("", True, evidence, who, error)
                        return
                    if facts is None or titles is None:
                        yield Chunk(piece, False, None if sent else evidence, source)
                        sent = True
                        continue
                    written += piece
                    ends = [m for m in CLAUSE_END.finditer(written) if m.start() >= max(checked_upto, floor)]
                    if (now := ENDED_NOW.search(written)) is not None and now.start() >= max(
                        checked_upto, floor
                    ):
                        ends.append(now)  # a sentence just ended goes out now, not with the next token
                    for end in ends:
                        verdict = check(written[: end.end()], facts, titles)
                        if not verdict.supported:
                            claim = verdict.claims[0]
                            break
                        checked_upto = end.end()
                        if ends_sentence(end):  # a whole sentence holds: it goes out
                            yield model_chunk(written[sent_upto : end.start()])
                            sent, sent_upto, model_sent = True, end.start(), True
                    if claim is not None:
                        break  # closing the pieces stops the generation
            if facts is not None and titles is not None:
                if claim is None:
                    verdict = check(written, facts, titles)
                    if verdict.supported and len(written.strip()) > floor:
                        self.metrics.explanations.labels(source="llm").inc()
                        if written[sent_upto:]:
                            yield model_chunk(written[sent_upto:])
                        yield Chunk("", True, evidence, source)
                        return
                    claim = verdict.claims[0] if verdict.claims else None
                if claim is not None:
                    self.metrics.unsupported_claims.labels(kind=claim.kind).inc()
                reason = f"{UNSUPPORTED}: {claim}" if claim else "the model wrote nothing past the opening"
                # what went out stays; it ends with a full stop, marked as whoever wrote the most of it
                who = source if model_sent else "template"
                self.metrics.explanations.labels(source=who).inc()
                if not sent:
                    yield Chunk(template_explanation(request), False, evidence, "template", reason)
                    yield Chunk("", True, evidence, "template", reason)
                    return
                if not written[:sent_upto].rstrip().endswith((".", "!", "?")):
                    yield Chunk(".", False, None, who)
                yield Chunk("", True, evidence, who, reason)
                return
            yield Chunk("", True, evidence, source)
        finally:
            self.metrics.llm_streams.dec()
