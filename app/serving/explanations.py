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
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from app.infra.cache import Kind
from app.infra.errors import NotFound, RateLimited
from app.services import catalog, ratings
from app.serving.llm_holder import NOT_READY
from app.serving.llm_inputs import explanation_inputs
from app.serving.parts import ServesModels
from ml.llm.backends import Overloaded
from ml.llm.evidence import Evidence
from ml.llm.faithfulness import CLAUSE_END, TitleIndex, check, ends_sentence, fix_articles, in_title, vet
from ml.llm.prompts import OPENING_TAIL, ExplainRequest, explanation_opening, opening_sentence
from ml.llm.template import template_explanation

# a sentence the text so far ends with: a full stop after a word (not "L.A." or "4.", which may
# go on), or "!" / "?"; CLAUSE_END waits for the space after it, one decoding step later
ENDED_NOW = re.compile(r"(?:(?<!\b[A-Z])(?<![\d.])\.|[!?])$")


if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.infra.metrics import Metrics
    from app.serving.llm_holder import ServedLLM
    from app.serving.parts import ServingParts
    from ml.llm.faithfulness import Claim, Facts

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
        [[e.movie_id, e.reason, e.similarity, e.weight, e.kind] for e in value.evidence],
        value.source,
        value.error,
    ]


def _decode(value: Any) -> Explained:
    text, evidence, source, error = value
    return Explained(
        text, [Evidence(int(m), r, float(s), float(w), k) for m, r, s, w, k in evidence], source, error
    )


UNSUPPORTED = "unsupported claim"


def _keep(value: Explained) -> bool:
    # What the LLM wrote is cached, and so is a template that replaced a text the checker
    # refused (the model would write it again); a template that stood in for a failure or a
    # timeout is not (the next request tries again).
    return value.source == "llm" or (value.error or "").startswith(UNSUPPORTED)


# "-2": entries carry each reason's weight and kind; the older three-field ones are not read
EXPLANATIONS = Kind("explanations-2", 3600, True, _encode, _decode, keep=_keep)


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


class StreamText:
    """One explanation stream's text. With facts to check against, the model's text is checked
    at every clause end and sent a sentence at a time once the text so far holds; a sentence's
    closing mark is held back (it opens the next chunk, or becomes the full stop when a later
    clause makes a claim the facts do not hold, and the stream ends there). Without facts,
    pieces go out as they come. The first chunk sent carries the evidence."""

    def __init__(
        self,
        request: ExplainRequest,
        evidence: list[Evidence],
        source: str,
        facts: Facts | None,
        titles: TitleIndex | None,
    ) -> None:
        self.request, self.evidence, self.source = request, evidence, source
        self.facts, self.titles = facts, titles
        # the server's opening is not the model's: claims are looked for after it
        self.opening = explanation_opening(request) if facts is not None else ""
        self.floor = len(self.opening)
        self.written = ""
        self.sent_upto = 0  # text before this has gone out
        self.checked_upto = 0  # claims are looked for clause by clause; text goes out by sentences
        self.sent = False
        self.model_sent = False  # a sentence of the model's own went out
        self.claim: Claim | None = None  # the first claim the facts do not hold

    def start(self) -> list[Chunk]:
        """An opening that states the closest evidence is true as it stands: it goes out at
        once, marked as the server's (TEMPLATE), so the first words never wait."""
        if opening_sentence(self.request) is None:
            return []
        self.sent_upto = self.floor - len(OPENING_TAIL)
        self.sent = True
        return [Chunk(self.opening[: self.sent_upto], False, self.evidence, "template")]

    def add(self, piece: str) -> list[Chunk]:
        """What may go out now that ``piece`` is written; at the first clause the facts do not
        hold, ``claim`` is set and nothing after it goes out."""
        if self.facts is None or self.titles is None:
            first = not self.sent
            self.sent = True
            return [Chunk(piece, False, self.evidence if first else None, self.source)]
        self.written += piece
        after = max(self.checked_upto, self.floor)
        ends = [
            m
            for m in CLAUSE_END.finditer(self.written)
            if m.start() >= after and not in_title(self.written, m.start(), self.facts)
        ]
        if (now := ENDED_NOW.search(self.written)) is not None and now.start() >= after:
            ends.append(now)  # a sentence just ended goes out now, not with the next token
        out = []
        for end in ends:
            verdict = check(self.written[: end.end()], self.facts, self.titles)
            if not verdict.supported:
                self.claim = verdict.claims[0]
                break
            self.checked_upto = end.end()
            if ends_sentence(end):  # a whole sentence holds: it goes out
                out.append(self._model_chunk(self.written[self.sent_upto : end.start()]))
                self.sent, self.sent_upto, self.model_sent = True, end.start(), True
        return out

    def failed(self, error: str | None) -> list[Chunk]:
        """The backend gave up: the template when nothing went out; else what is out ends
        honestly (with a full stop) rather than a second text starting."""
        if not self.sent:
            text = template_explanation(self.request)
            return [
                Chunk(text, False, self.evidence, "template", error),
                Chunk("", True, self.evidence, "template", error),
            ]
        who = self.source if self.model_sent or self.facts is None else "template"
        stop = [] if self.facts is None or self._ends_sentence() else [Chunk(".", False, None, who)]
        return [*stop, Chunk("", True, self.evidence, who, error)]

    def finish(self, metrics: Metrics) -> list[Chunk]:
        """The end of the stream: the rest of a text that holds, else what went out ended with
        a full stop and marked as whoever wrote the most of it (the template when nothing did)."""
        if self.facts is None or self.titles is None:
            return [Chunk("", True, self.evidence, self.source)]
        claim = self.claim
        if claim is None:
            verdict = check(self.written, self.facts, self.titles)
            if verdict.supported and len(self.written.strip()) > self.floor:
                metrics.explanations.labels(source="llm").inc()
                rest = self.written[self.sent_upto :]
                return [
                    *([self._model_chunk(rest)] if rest else []),
                    Chunk("", True, self.evidence, self.source),
                ]
            claim = verdict.claims[0] if verdict.claims else None
        if claim is not None:
            metrics.unsupported_claims.labels(kind=claim.kind).inc()
        reason = f"{UNSUPPORTED}: {claim}" if claim else "the model wrote nothing past the opening"
        who = self.source if self.model_sent else "template"
        metrics.explanations.labels(source=who).inc()
        if not self.sent:
            return [
                Chunk(template_explanation(self.request), False, self.evidence, "template", reason),
                Chunk("", True, self.evidence, "template", reason),
            ]
        stop = [] if self._ends_sentence() else [Chunk(".", False, None, who)]
        return [*stop, Chunk("", True, self.evidence, who, reason)]

    def _model_chunk(self, text: str) -> Chunk:
        """Model-written text that holds, as served (articles made right)."""
        return Chunk(fix_articles(text), False, None if self.sent else self.evidence, self.source)

    def _ends_sentence(self) -> bool:
        return self.written[: self.sent_upto].rstrip().endswith((".", "!", "?"))


class ExplanationService(ServesModels):
    def __init__(self, parts: ServingParts) -> None:
        super().__init__(parts)
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

    def vet(self, text: str, request: ExplainRequest, titles: TitleIndex) -> tuple[str, str | None]:
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

    async def _inputs(
        self, pairs: Sequence[tuple[int, int]], session: AsyncSession | None = None
    ) -> list[tuple[ExplainRequest, list[Evidence]]]:
        served = self.models.current
        model = served.model if served else None
        read = await self.histories.read(model, [u for u, _ in pairs])
        matrix = read.matrix() if model is not None else None  # the rows served: dismissals too
        if session is not None:
            return await explanation_inputs(
                session=session, model=model, pairs=pairs, rated=read.pairs(), matrix=matrix
            )
        async with self.sessions() as own:
            return await explanation_inputs(
                session=own, model=model, pairs=pairs, rated=read.pairs(), matrix=matrix
            )

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
                # a cut text says why; a refused one is what a stream of it would have said (the
                # opening's sentence, which went out first) or else the template, with the claim
                out[p] = (
                    Explained(fix_articles(kept), e, "llm", claim)
                    if kept
                    else Explained(opening_sentence(r) or template_explanation(r), e, "template", claim)
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
        async with self.sessions() as session:  # one session: the checks, then the facts
            if not await ratings.users_by_ids(session=session, user_ids=[user_id]):
                raise NotFound(f"user {user_id} does not exist")
            found = await catalog.movies_by_ids(session=session, movie_ids=[movie_id])
            if not found:
                raise NotFound(f"movie {movie_id} does not exist")
            if found[movie_id].retired:
                raise NotFound(
                    f"movie {movie_id} was retired from the catalog: it is not recommended any more"
                )
            [(request, evidence)] = await self._inputs([(user_id, movie_id)], session)
        self.metrics.llm_streams.inc()
        async with (
            self.llm.lease() as served,
            contextlib.aclosing(self._stream(served, request, evidence)) as chunks,
        ):
            waiting = served.note == NOT_READY  # every chunk says why the template writes
            async for chunk in chunks:
                yield replace(chunk, error=chunk.error or NOT_READY) if waiting else chunk

    async def _stream(
        self, served: ServedLLM, request: ExplainRequest, evidence: list[Evidence]
    ) -> AsyncGenerator[Chunk, None]:
        """The LLM's text as ``StreamText`` lets it out: checked at every clause end, sent a
        sentence at a time, ended at the first claim the facts do not hold."""
        source = served.backend.source
        facts = request.facts if source == "llm" else None
        titles = await self.titles() if facts is not None else None
        text = StreamText(request, evidence, source, facts, titles)
        try:
            for chunk in text.start():
                yield chunk
            pieces = served.backend.stream(request)
            async with contextlib.aclosing(pieces):  # type: ignore[type-var]
                while text.claim is None:  # closing the pieces stops the generation
                    try:
                        piece, error = await self.fallback.call(
                            "stream", anext(pieces), raise_overloaded=True
                        )
                    except StopAsyncIteration:
                        break
                    except Overloaded as exc:
                        raise RateLimited(str(exc), retryAfterSeconds=1, retryAfter=1) from exc
                    if piece is None:
                        for chunk in text.failed(error):
                            yield chunk
                        return
                    for chunk in text.add(piece):
                        yield chunk
            for chunk in text.finish(self.metrics):
                yield chunk
        finally:
            self.metrics.llm_streams.dec()
