"""The Ollama backend: the official ``ollama`` AsyncClient against an Ollama server.

Explanations stream from ``/api/chat``; closing the stream closes the HTTP response, which
makes Ollama stop generating. Preference questions are scored from ``logprobs``: the answer
token's top log-probabilities give P(Yes) against No. Promotion uploads the LoRA adapter
as blobs and creates ``cinerec-explainer:<version>`` from the base tag plus the adapter.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ml.llm.backends import ExplainRequest, LLMError, NullObserver, Observer, ScoreRequest
from ml.llm.prompts import NO, SYSTEM, YES, explanation_messages, explanation_opening

log = logging.getLogger(__name__)
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


def explainer_tag(version: str) -> str:
    return f"cinerec-explainer:{version}"


def p_yes(top_logprobs: Sequence[Any]) -> float:
    """P(Yes) against No from one position's top log-probabilities (0.5 when neither is there)."""
    found: dict[str, float] = {}
    for entry in top_logprobs:
        word = str(entry.token).strip()
        if word in (YES, NO) and word not in found:
            found[word] = float(entry.logprob)
    yes, no = found.get(YES, -math.inf), found.get(NO, -math.inf)
    if yes == no == -math.inf:
        return 0.5
    top = max(yes, no)
    return math.exp(yes - top) / (math.exp(yes - top) + math.exp(no - top))


def _llm_error(exc: Exception) -> LLMError:
    """The server's own error, or 'unreachable' for transport failures and timeouts."""
    from ollama import RequestError, ResponseError

    if isinstance(exc, (ResponseError, RequestError)):
        return LLMError(f"ollama: {exc}")
    return LLMError(f"ollama unreachable: {type(exc).__name__}: {exc}")


class OllamaBackend:
    name = "ollama"
    source = "llm"
    can_score = True

    def __init__(
        self,
        url: str,
        model: str,
        *,
        keep_alive: str = "30m",
        timeout_s: float = 30.0,
        max_new_tokens: int = 64,
        observer: Observer | None = None,
    ) -> None:
        from ollama import AsyncClient

        self.client = AsyncClient(host=url, timeout=timeout_s)
        self.model = model
        self.keep_alive = keep_alive
        self.max_new_tokens = max_new_tokens
        self.observer = observer or NullObserver()

    def _options(self, num_predict: int) -> dict[str, Any]:
        return {"num_predict": num_predict, "temperature": 0, "repeat_penalty": 1.15}

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except Exception as exc:
            raise _llm_error(exc) from exc

    async def score(self, requests: Sequence[ScoreRequest]) -> list[np.ndarray]:
        """One chat call per pair, all in flight together (Ollama batches them server-side)."""

        async def one(request: ScoreRequest, candidate: str) -> float:
            response = await self._call(
                self.client.chat(
                    model=self.model,
                    messages=[
                        {"role": "system", "content": SYSTEM},
                        {"role": "user", "content": request.profile.text() + candidate},
                    ],
                    options=self._options(1),
                    logprobs=True,
                    top_logprobs=20,
                    keep_alive=self.keep_alive,
                )
            )
            if not response.logprobs:
                raise LLMError("ollama returned no logprobs (server older than 0.12.11?)")
            return p_yes(response.logprobs[0].top_logprobs or [])

        self.observer.batch("score", sum(len(r.candidates) for r in requests))
        flat = await asyncio.gather(*(one(r, c) for r in requests for c in r.candidates))
        out, start = [], 0
        for r in requests:
            out.append(np.asarray(flat[start : start + len(r.candidates)]))
            start += len(r.candidates)
        return out

    def _messages(self, request: ExplainRequest) -> list[dict[str, str]]:
        opening = explanation_opening(request)
        return [
            *explanation_messages(request),
            {"role": "assistant", "content": opening},
        ]

    async def stream(self, request: ExplainRequest) -> AsyncIterator[str]:
        opening = explanation_opening(request)
        parts = await self._call(
            self.client.chat(
                model=self.model,
                messages=self._messages(request),
                stream=True,
                options=self._options(self.max_new_tokens),
                keep_alive=self.keep_alive,
            )
        )
        first = True
        try:
            async for part in parts:
                piece = part.message.content or ""
                if piece:
                    self.observer.tokens(1)
                    yield (f"{opening} {piece.lstrip()}" if first else piece)
                    first = False
        except LLMError:
            raise
        except Exception as exc:
            raise _llm_error(exc) from exc
        finally:
            await parts.aclose()  # closes the HTTP response: Ollama stops generating

    async def explain_many(self, requests: Sequence[ExplainRequest]) -> list[str]:
        async def one(request: ExplainRequest) -> str:
            response = await self._call(
                self.client.chat(
                    model=self.model,
                    messages=self._messages(request),
                    options=self._options(self.max_new_tokens),
                    keep_alive=self.keep_alive,
                )
            )
            self.observer.tokens(int(response.eval_count or 0))  # Ollama counts what it generated
            return f"{explanation_opening(request)} {(response.message.content or '').strip()}"

        self.observer.batch("generate", len(requests))
        return list(await asyncio.gather(*(one(r) for r in requests)))

    async def ensure_model(self, base_tag: str, adapter: Path | None, version: str | None) -> str:
        """The Ollama model to serve: ``cinerec-explainer:<version>`` created from ``base_tag``
        plus the adapter (uploaded as blobs), or the base tag itself when there is no adapter."""
        from ollama import ResponseError

        try:
            await self.client.show(base_tag)
        except ResponseError as exc:
            if exc.status_code == 404:
                raise LLMError(f"ollama has no {base_tag}: run `ollama pull {base_tag}` there first") from exc
            raise _llm_error(exc) from exc
        except Exception as exc:
            raise _llm_error(exc) from exc
        if adapter is None or version is None:
            self.model = base_tag
            return base_tag
        tag = explainer_tag(version)
        digests = {}
        for name in ADAPTER_FILES:
            digests[name] = await self._call(self.client.create_blob(adapter / name))
        await self._call(self.client.create(model=tag, from_=base_tag, adapters=digests))
        self.model = tag
        return tag

    async def aclose(self) -> None:
        await self.client._client.aclose()
