"""Explanations without a model: a sentence built from the engine's evidence.

The ``none`` backend answers with these, and every other backend falls back to them when
the model fails or times out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import numpy as np

from ml.llm.backends import ExplainRequest, ScoreRequest


def template_explanation(request: ExplainRequest) -> str:
    if not request.evidence:
        return f"{request.title} is popular with viewers whose ratings resemble yours."
    first, *more = request.evidence[:3]
    # one sentence a reason, so that each "it shares" is with the movie its sentence names;
    # a later reason about the movie itself ("it is widely liked") names it, not "it"
    also = [f"Also, {request.title}{r[2:]}." if r.startswith("it ") else f"Also, {r}." for r in more]
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
