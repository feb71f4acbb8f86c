"""The explanation checker on the serving paths, with a backend whose text is scripted (the
checker's verdicts, not the model's prose, are under test): a stream sends a sentence only
once the text so far is supported, stops at the first unsupported clause keeping the whole
sentences before it, and gives the template when the model's first sentence already fails;
the HTTP path keeps the same text."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from app.infra.metrics import Metrics
from app.serving.explanations import ExplanationService
from app.serving.llm_holder import Fallback, RerankWeights, ServedLLM
from ml.llm.faithfulness import FactMovie, Facts, TitleIndex, supported_prefix
from ml.llm.prompts import ExplainRequest, explanation_opening

FARGO = FactMovie("Fargo (1996)", 1996, ("Crime", "Drama", "Thriller"), rating=5.0)
CANDIDATE = FactMovie("The Godfather (1972)", 1972, ("Action", "Crime", "Drama"))
REQUEST = ExplainRequest(
    "The Godfather (1972)",
    ["you rated Fargo (1996) 5/5 and it shares Crime, Drama"],
    Facts(CANDIDATE, (FARGO,), mean_rating=4.36, ratings_count=413),
)
OPENING = explanation_opening(REQUEST)
TITLES = TitleIndex(["Fargo (1996)", "Godfather, The (1972)", "Scarface (1983)"])


class Scripted:
    """A backend that writes a fixed text, a few characters at a time."""

    name = "scripted"
    source = "llm"
    can_score = False

    def __init__(self, text: str) -> None:
        self.text = text
        self.pieces_sent = 0

    async def stream(self, request: ExplainRequest) -> AsyncIterator[str]:
        for start in range(0, len(self.text), 7):
            self.pieces_sent += 1
            await asyncio.sleep(0)
            yield self.text[start : start + 7]

    async def explain_many(self, requests: Sequence[ExplainRequest]) -> list[str]:
        return [self.text for _ in requests]

    async def aclose(self) -> None:
        pass


def service() -> ExplanationService:
    found = object.__new__(ExplanationService)
    found.metrics = Metrics()
    found.fallback = Fallback(found.metrics, 5.0)

    async def titles() -> TitleIndex:
        return TITLES

    found.titles = titles  # type: ignore[method-assign]
    return found


async def stream(text: str) -> tuple[list, Scripted]:
    backend = Scripted(text)
    served = ServedLLM(backend, None, RerankWeights())  # type: ignore[arg-type]
    chunks = [c async for c in service()._stream(served, REQUEST, [])]
    return chunks, backend


def test_a_supported_text_streams_whole_and_matches_http() -> None:
    text = f"{OPENING} it shares Crime and Drama. Viewers rate it 4.4/5 on average."
    chunks, _ = asyncio.run(stream(text))
    assert "".join(c.text for c in chunks) == text and chunks[-1].done
    # the server's opening goes out first, as the server's; then the model's sentences, as its own
    assert (
        chunks[0].text
        == "You will enjoy The Godfather (1972) because many who watched Fargo (1996), which you rated 5/5, watched it too"
    )
    assert chunks[0].source == "template" and chunks[0].evidence is not None
    assert all(c.source == "llm" and c.error is None for c in chunks[1:])
    assert len([c for c in chunks[1:] if c.text]) >= 2  # sentence by sentence, not at the end
    assert supported_prefix(text, REQUEST.facts, TITLES, len(OPENING)) == text


def test_a_stream_stops_at_the_first_unsupported_clause() -> None:
    text = (
        f"{OPENING} it shares Crime and Drama. It is a drama, and it won an Oscar for Marlon Brando, "
        "and more words follow here, and here, and here, until the sentence ends."
    )
    chunks, backend = asyncio.run(stream(text))
    sent = "".join(c.text for c in chunks)
    assert sent == f"{OPENING} it shares Crime and Drama."
    assert "Oscar" not in sent and chunks[-1].done and chunks[-1].error.startswith("unsupported claim")
    # the HTTP path cuts the same text at the same place
    assert supported_prefix(text, REQUEST.facts, TITLES, len(OPENING)) == sent
    assert backend.pieces_sent < len(text) / 7  # generation stopped at the clause, mid-sentence


def test_half_a_sentence_never_goes_out() -> None:
    """The model's first sentence holds for two clauses, then claims a genre: nothing of it is
    kept (not "..., and like that film."), over HTTP and in a stream alike."""
    text = f"{OPENING} and like that film, it is a horror story."
    chunks, _ = asyncio.run(stream(text))
    sent = "".join(c.text for c in chunks)
    assert (
        sent
        == "You will enjoy The Godfather (1972) because many who watched Fargo (1996), which you rated 5/5, watched it too."
    )
    assert all(c.source == "template" for c in chunks)
    assert supported_prefix(text, REQUEST.facts, TITLES, len(OPENING)) == ""


def test_a_first_sentence_that_fails_leaves_the_servers_words_only() -> None:
    text = f"{OPENING} it is a horror film like Scarface, which you also loved."
    chunks, _ = asyncio.run(stream(text))
    sent = "".join(c.text for c in chunks)
    assert (
        sent
        == "You will enjoy The Godfather (1972) because many who watched Fargo (1996), which you rated 5/5, watched it too."
    )
    assert all(c.source == "template" for c in chunks) and chunks[-1].error.startswith("unsupported claim")
    # over HTTP: the template's sentence
    assert supported_prefix(text, REQUEST.facts, TITLES, len(OPENING)) == ""


def test_without_evidence_nothing_goes_out_before_a_sentence_holds() -> None:
    bare = ExplainRequest(
        "The Godfather (1972)", [], Facts(CANDIDATE, (), mean_rating=4.36, ratings_count=413)
    )

    async def run(text: str) -> list:
        served = ServedLLM(Scripted(text), None, RerankWeights())  # type: ignore[arg-type]
        return [c async for c in service()._stream(served, bare, [])]

    opening = explanation_opening(bare)
    failed = asyncio.run(run(f"{opening} it is a horror film."))
    assert failed[0].source == "template" and failed[0].text.startswith("The Godfather (1972) is popular")
    held = asyncio.run(run(f"{opening} it is a crime drama, and viewers rate it 4.4/5."))
    assert (
        held[0].source == "llm"
        and "".join(c.text for c in held) == f"{opening} it is a crime drama, and viewers rate it 4.4/5."
    )
