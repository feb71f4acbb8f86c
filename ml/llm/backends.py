"""One small protocol for every LLM backend: score preference questions, stream and batch
explanations. ``CINEREC_LLM_BACKEND`` picks transformers (in-process), ollama or none.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ml.llm.prompts import ExplainRequest, ScoreRequest

__all__ = [
    "ExplainRequest",
    "LLMBackend",
    "LLMError",
    "NullObserver",
    "Observer",
    "Overloaded",
    "ScoreRequest",
]


class LLMError(RuntimeError):
    """The model failed or did not answer in time: callers fall back to the template."""


class Overloaded(LLMError):
    """Too many explanation streams are waiting; the caller should retry later."""


class Observer(Protocol):
    """Hooks for metrics: ``batch`` once per model batch ("score" or "generate"), ``tokens``
    for every generated token count, ``running`` with the number of model calls in flight."""

    def batch(self, kind: str, size: int) -> None: ...

    def tokens(self, count: int) -> None: ...

    def running(self, count: int) -> None: ...


class NullObserver:
    def batch(self, kind: str, size: int) -> None:
        pass

    def tokens(self, count: int) -> None:
        pass

    def running(self, count: int) -> None:
        pass


class LLMBackend(Protocol):
    name: str  # what to report: transformers, ollama, none
    source: str  # who writes its explanations: "llm", or "template" for the template backend
    can_score: bool

    async def score(self, requests: Sequence[ScoreRequest]) -> list[np.ndarray]:
        """P(Yes) per candidate, one array per request, in one batch."""
        ...

    def stream(self, request: ExplainRequest) -> AsyncIterator[str]:
        """Text pieces as they are generated; closing the iterator stops the generation."""
        ...

    async def explain_many(self, requests: Sequence[ExplainRequest]) -> list[str]:
        """Whole explanations for all ``requests``, generated as one batch."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class Decoding:
    """How the in-process backend decodes: how long an answer may be, how answers batch, and
    whether genre words are constrained to the facts."""

    max_new_tokens: int = 64
    max_batch: int = 8  # answers decoded together
    max_pending: int = 32  # answers waiting for a batch; more are refused (Overloaded)
    window_s: float = 0.02  # how long a batch waits for more answers to join
    repetition_penalty: float = 1.15
    min_new_tokens: int = 0  # a test's way to make every answer long
    constrain_genres: bool = False
