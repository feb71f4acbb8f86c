"""Explanations without a model: a sentence built from the engine's evidence.

The ``none`` backend answers with these, and every other backend falls back to them when
the model fails or times out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import numpy as np

from ml.llm.backends import ExplainRequest, ScoreRequest
from ml.llm.prompts import popularity_reason


def template_explanation(request: ExplainRequest) -> str:
    """The reasons in the order of their weight, one sentence each, each said as what it is:
    many who watched a movie the user rated watched this one too, or it is widely watched.
    Without facts (a caller that holds only the evidence lines), the lines themselves."""
    facts = request.facts
    if facts is None:
        if not request.evidence:
            return f"{request.title} is popular with viewers whose ratings resemble yours."
        first, *more = request.evidence[:3]
        return " ".join([f"We picked {request.title} because {first}.", *(f"Also, {r}." for r in more)])
    said = [
        f"many who watched {m.title}, which you rated {m.rating:g}/5, watched it too"
        for m in facts.evidence
        if m.rating is not None
    ]
    if facts.prior is not None and facts.mean_rating is not None and facts.ratings_count:
        said.insert(min(facts.prior, len(said)), popularity_reason(facts.mean_rating, facts.ratings_count))
    if not said:
        return f"{request.title} is popular with viewers whose ratings resemble yours."
    first, *more = said[:3]
    # a later reason about the movie itself names it ("Also, Fargo (1996) is widely liked")
    also = [
        f"Also, {request.title}{r[2:]}." if r.startswith("it ") else f"{r[0].upper()}{r[1:]}." for r in more
    ]
    return " ".join([f"We picked {request.title} because {first}.", *also])


class TemplateBackend:
    """A backend like the others, whose explanations are the template's: callers never need to
    ask which backend they hold."""

    name = "none"
    source = "template"
    can_score = False

    async def score(self, requests: Sequence[ScoreRequest]) -> list[np.ndarray]:
        raise NotImplementedError("the template backend does not score")

    async def stream(self, request: ExplainRequest) -> AsyncIterator[str]:
        for word in template_explanation(request).split(" "):
            yield word + " "

    async def explain_many(self, requests: Sequence[ExplainRequest]) -> list[str]:
        return [template_explanation(r) for r in requests]

    async def aclose(self) -> None:
        pass
