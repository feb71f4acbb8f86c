"""The serving LLM: a backend built from the ``cinerec-llm`` champion, swapped on promotion.

With no adapter registered yet the base model serves (and says so); with
``CINEREC_LLM_BACKEND=none``, or when the model cannot be loaded, explanations come from
the template and nothing is reranked.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.metrics import LLM_BATCH_SIZE, LLM_BATCHES, LLM_TOKENS
from app.serving import ChampionHolder
from ml.llm.backends import LLMBackend, LLMError
from ml.llm.template import TemplateBackend
from ml.registry import CHAMPION, LLM, RERANK_WEIGHT_TAG

if TYPE_CHECKING:
    from pathlib import Path

    from app.announcements import Announcements
    from app.settings import Settings

log = logging.getLogger(__name__)


class PrometheusObserver:
    def batch(self, kind: str, size: int) -> None:
        LLM_BATCHES.labels(kind=kind).inc()
        LLM_BATCH_SIZE.labels(kind=kind).observe(size)

    def tokens(self, count: int) -> None:
        LLM_TOKENS.inc(count)


@dataclass(frozen=True)
class ServedLLM:
    backend: LLMBackend
    version: str | None  # None: the base model (or the template) without an adapter
    rerank_weight: float
    note: str = ""

    def describe(self) -> dict[str, str]:
        out = {"backend": self.backend.name, "model": LLM if self.version else "base"}
        if self.version:
            out["version"] = self.version
        if self.note:
            out["note"] = self.note
        return out


class LLMHolder(ChampionHolder[ServedLLM]):
    name = LLM

    def __init__(self, settings: Settings, announcements: Announcements | None = None) -> None:
        super().__init__(settings, announcements)
        self.current: ServedLLM = ServedLLM(TemplateBackend(), None, 0.0, "not loaded yet")
        self._loaded = False
        if settings.llm_backend == "transformers":
            from ml.llm.base import init_torch

            init_torch(settings.llm_threads)  # the lifespan runs on the main thread under uvicorn

    def _weight(self, version: str | None) -> float:
        """The configured weight, else the one `cinerec evaluate --rerank-users` validated for
        this version, else 0: no rerank until it has been shown to help."""
        if self.settings.llm_rerank_weight is not None:
            return self.settings.llm_rerank_weight
        if version is None:
            return 0.0
        tags = self.registry.client.get_model_version(LLM, version).tags
        return float(tags.get(RERANK_WEIGHT_TAG, 0.0))

    async def _load(self, version: str | None) -> ServedLLM:
        settings = self.settings
        if settings.llm_backend == "none":
            return ServedLLM(TemplateBackend(), None, 0.0, "CINEREC_LLM_BACKEND=none")
        adapter = (
            await asyncio.to_thread(self.registry.download, LLM, version, settings.home / "models")
            if version
            else None
        )
        weight = await asyncio.to_thread(self._weight, version)
        observer = PrometheusObserver()
        if settings.llm_backend == "ollama":
            from ml.llm.ollama_backend import OllamaBackend

            ollama = OllamaBackend(
                settings.llm_ollama_url,
                settings.llm_ollama_base_tag,
                keep_alive=settings.llm_ollama_keep_alive,
                timeout_s=settings.llm_timeout_seconds,
                max_new_tokens=settings.llm_max_new_tokens,
                observer=observer,
            )
            try:
                await ollama.ensure_model(settings.llm_ollama_base_tag, adapter, version)
            except LLMError as exc:
                # Keep the Ollama backend: requests fall back to the template (with this error)
                # until Ollama answers, and the next promotion or restart creates the model.
                log.warning("Ollama not ready: %s", exc)
                return ServedLLM(ollama, version, weight, f"ollama not ready at start-up: {exc}")
            return ServedLLM(ollama, version, weight)
        backend = await asyncio.to_thread(self._load_transformers, adapter, observer)
        return ServedLLM(backend, version, weight)

    def _load_transformers(self, adapter: Path | None, observer: PrometheusObserver) -> LLMBackend:
        from ml.llm.base import load_base, with_adapter
        from ml.llm.local import TransformersBackend

        settings = self.settings
        model, tokenizer = load_base(settings.llm_base, settings.llm_cache_dir or settings.home / "llm")
        if adapter is not None:
            model = with_adapter(model, adapter, merge=True)
            model.eval()
        return TransformersBackend(
            model,
            tokenizer,
            max_new_tokens=settings.llm_max_new_tokens,
            max_batch=settings.llm_max_batch,
            max_pending=settings.llm_max_pending,
            window_s=settings.llm_batch_window_ms / 1000,
            observer=observer,
        )

    async def _swap(self, served: ServedLLM) -> None:
        old, self.current = self.current, served  # one reference assignment: atomic for readers
        if old.backend is not served.backend:
            await old.backend.aclose()

    async def load_champion(self) -> None:
        """Serve the champion adapter, or the base model when none is registered."""
        version = await asyncio.to_thread(self.registry.alias_version, LLM, CHAMPION)
        if self._loaded and self.current.version == version:
            return
        async with self._lock:
            try:
                served = await self._load(version)
            except Exception as exc:  # explanations still answer, from the template
                log.exception("could not load the LLM; explanations fall back to the template")
                served = ServedLLM(TemplateBackend(), version, 0.0, f"LLM unavailable: {exc}")
            await self._swap(served)
            self._loaded = True
        log.info("LLM: %s", served.describe())

    async def aclose(self) -> None:
        await self.current.backend.aclose()
