"""The serving LLM: a backend built from the ``cinerec-llm`` champion, swapped on promotion.

With no adapter registered yet the base model serves (and says so); with
``CINEREC_LLM_BACKEND=none``, or when the model cannot be loaded, explanations come from
the template and nothing is reranked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, TypeVar

from app.serving.champions import ChampionHolder
from ml.llm.backends import Decoding, LLMBackend, LLMError, Overloaded
from ml.llm.rerank import SEGMENTS, segment_of
from ml.llm.template import TemplateBackend
from ml.registry import CHAMPION, LLM, RERANK_WEIGHT_TAG, RERANK_WEIGHTS_TAG

if TYPE_CHECKING:
    from pathlib import Path

    from app.infra.announcements import Announcements
    from app.infra.metrics import Metrics
    from app.infra.settings import Settings

log = logging.getLogger(__name__)

# The note (and each template chunk's error) while CINEREC_LLM_ADAPTER_REQUIRED waits for a
# tuned adapter; clients show it as it stands.
NOT_READY = "explanations are written by the template until the tuned model is ready"
T = TypeVar("T")


class PrometheusObserver:
    """One LLM backend's batch and token hooks, counted on the app's metrics. During a
    promotion two backends run at once: each adds its own change to the running gauge, so
    the gauge is their sum rather than whichever reported last."""

    def __init__(self, metrics: Metrics | None) -> None:
        self.metrics = metrics
        self._running = 0

    def batch(self, kind: str, size: int) -> None:
        if self.metrics is not None:
            self.metrics.llm_batches.labels(kind=kind).inc()
            self.metrics.llm_batch_size.labels(kind=kind).observe(size)

    def tokens(self, count: int) -> None:
        if self.metrics is not None:
            self.metrics.llm_tokens.inc(count)

    def running(self, count: int) -> None:
        if self.metrics is not None:
            self.metrics.llm_running.inc(count - self._running)
        self._running = count


class Fallback:
    """The one policy for every LLM call: it answers within ``timeout_s``, or the caller's
    alternative stands (the template explanation, the recommender's order) and the reason
    is counted (``cinerec_llm_fallbacks_total{reason}``), logged and returned for the
    response to report."""

    def __init__(self, metrics: Metrics | None, timeout_s: float) -> None:
        self.metrics = metrics
        self.timeout_s = timeout_s

    def reason(self, kind: str, error: BaseException) -> str:
        if self.metrics is not None:
            self.metrics.llm_fallbacks.labels(reason=kind).inc()
        log.warning("LLM %s failed, answering without it: %s", kind, error)
        return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__

    async def call(
        self, kind: str, work: Awaitable[T], *, raise_overloaded: bool = False
    ) -> tuple[T | None, str | None]:
        """(result, None), or (None, why) when the LLM failed or ran out of time. With
        ``raise_overloaded`` a full queue is the caller's to report (RATE_LIMITED)."""
        try:
            return await asyncio.wait_for(work, self.timeout_s), None
        except Overloaded:
            if raise_overloaded:
                raise
            return None, self.reason(kind, Overloaded("the LLM queue is full"))
        except (LLMError, TimeoutError) as exc:
            return None, self.reason(kind, exc)


@dataclass(frozen=True)
class RerankWeights:
    """The rerank weight per user segment (``ml.llm.rerank.SEGMENTS``): a user is reranked
    with the weight of the segment their rating count falls in; 0 means no rerank."""

    by_segment: tuple[tuple[str, float], ...] = ()

    @classmethod
    def same(cls, weight: float) -> RerankWeights:
        return cls(tuple((name, weight) for name in SEGMENTS))

    def weight_for(self, rated: int) -> float:
        return dict(self.by_segment).get(segment_of(rated), 0.0)

    @property
    def any(self) -> bool:
        return any(w > 0 for _, w in self.by_segment)

    def key(self) -> str:
        return ",".join(f"{name}={w:g}" for name, w in self.by_segment)

    def describe(self) -> dict[str, float]:
        return dict(self.by_segment)


@dataclass(frozen=True)
class ServedLLM:
    backend: LLMBackend
    version: str | None  # None: the base model (or the template) without an adapter
    rerank_weights: RerankWeights
    note: str = ""

    def describe(self) -> dict[str, str]:
        out = {"backend": self.backend.name, "model": LLM if self.version else "base"}
        if self.version:
            out["version"] = self.version
        if self.note:
            out["note"] = self.note
        return out


def decoding(settings: Settings, *, max_pending: int | None = None) -> Decoding:
    """How the in-process LLM decodes, from the settings."""
    return Decoding(
        max_new_tokens=settings.llm_max_new_tokens,
        max_batch=settings.llm_max_batch,
        max_pending=settings.llm_max_pending if max_pending is None else max_pending,
        window_s=settings.llm_batch_window_ms / 1000,
        constrain_genres=settings.llm_constrain_genres,
    )


class LLMHolder(ChampionHolder[ServedLLM]):
    name = LLM

    def __init__(
        self, settings: Settings, announcements: Announcements | None = None, metrics: Metrics | None = None
    ) -> None:
        super().__init__(settings, announcements)
        self.metrics = metrics
        self.current: ServedLLM = ServedLLM(TemplateBackend(), None, RerankWeights(), "not loaded yet")
        self._loaded = False
        # leases per backend: a replaced backend is closed once the work begun on it is done
        self._leases: dict[int, int] = {}
        self._released = asyncio.Condition()
        self._retiring: set[asyncio.Task[None]] = set()
        if settings.llm_backend == "transformers":
            from ml.llm.base_model import init_torch

            init_torch(settings.llm_threads)  # the lifespan runs on the main thread under uvicorn

    def _weight(self, version: str | None) -> RerankWeights:
        """The configured weight (every segment), else the per-segment weights `cinerec evaluate
        --rerank-users` validated for this version, else 0: no rerank until it has been shown to
        help, and then only for the users it helped."""
        if self.settings.llm_rerank_weight is not None:
            return RerankWeights.same(self.settings.llm_rerank_weight)
        if version is None:
            return RerankWeights()
        tags = self.registry.version_tags(LLM, version)
        if RERANK_WEIGHTS_TAG in tags:
            found = json.loads(tags[RERANK_WEIGHTS_TAG])
            return RerankWeights(tuple((name, float(found.get(name, 0.0))) for name in SEGMENTS))
        return RerankWeights.same(float(tags.get(RERANK_WEIGHT_TAG, 0.0)))

    async def _load(self, version: str | None) -> ServedLLM:
        settings = self.settings
        if settings.llm_backend == "none":
            return ServedLLM(TemplateBackend(), None, RerankWeights(), "CINEREC_LLM_BACKEND=none")
        if version is None and settings.llm_adapter_required:
            return ServedLLM(TemplateBackend(), None, RerankWeights(), NOT_READY)
        adapter = (
            await asyncio.to_thread(self.registry.download, LLM, version, settings.home / "models")
            if version
            else None
        )
        weight = await asyncio.to_thread(self._weight, version)
        observer = PrometheusObserver(self.metrics)
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
                # Keep the Ollama backend on the base tag: requests fall back to the template
                # (with this error) until Ollama answers; the next promotion or restart creates
                # the adapter's model. Until then the base model writes, and says so.
                log.warning("Ollama could not serve version %s: %s", version, exc)
                note = f"ollama could not create version {version}'s model: {exc}" if version else str(exc)
                return ServedLLM(ollama, None, await asyncio.to_thread(self._weight, None), note)
            return ServedLLM(ollama, version, weight)
        backend = await asyncio.to_thread(self._load_transformers, adapter, observer)
        return ServedLLM(backend, version, weight)

    def _load_transformers(self, adapter: Path | None, observer: PrometheusObserver) -> LLMBackend:
        from ml.llm.base_model import for_serving, load_base, with_adapter
        from ml.llm.local import TransformersBackend

        settings = self.settings
        model, tokenizer = load_base(settings.llm_base, settings.llm_cache_dir or settings.home / "llm")
        if adapter is not None:
            model = with_adapter(model, adapter, merge=True)
            model.eval()
        model = for_serving(model, settings.llm_quantize)
        return TransformersBackend(model, tokenizer, decoding(settings), observer=observer)

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[ServedLLM]:
        """The LLM serving now, held for one piece of work (a batch of explanations, a stream,
        a rerank): a promotion meanwhile serves new work from the new version and closes this
        one's backend only when every lease on it is returned."""
        served = self.current
        key = id(served.backend)
        self._leases[key] = self._leases.get(key, 0) + 1
        try:
            yield served
        finally:
            left = self._leases[key] - 1
            if left:
                self._leases[key] = left
            else:
                del self._leases[key]
            async with self._released:
                self._released.notify_all()

    async def _retire(self, backend: LLMBackend) -> None:
        """Close a replaced backend after its in-flight work, or after the LLM timeout (by then
        that work has fallen back to the template anyway)."""
        try:
            async with self._released:
                await asyncio.wait_for(
                    self._released.wait_for(lambda: id(backend) not in self._leases),
                    self.settings.llm_timeout_seconds + 5,
                )
        except TimeoutError:
            log.warning("closing the previous LLM with %s calls still running", self._leases.get(id(backend)))
        await backend.aclose()

    async def _swap(self, served: ServedLLM) -> None:
        old, self.current = self.current, served  # one reference assignment: atomic for readers
        if old.backend is not served.backend:
            task = asyncio.create_task(self._retire(old.backend))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def load_champion(self) -> None:
        """Serve the champion adapter, or the base model when none is registered."""
        version = await asyncio.to_thread(self.registry.alias_version, LLM, CHAMPION)
        if self._loaded and self.current.version == version:
            # the same version, perhaps with a newly validated rerank weight: take it
            weight = await asyncio.to_thread(self._weight, version)
            if weight != self.current.rerank_weights and self.settings.llm_backend != "none":
                self.current = replace(self.current, rerank_weights=weight)
                log.info("LLM version %s now reranks with weights %s", version, weight.key())
            return
        async with self._lock:
            try:
                served = await self._load(version)
            except Exception as exc:  # explanations still answer, from the template
                log.exception("could not load the LLM; explanations fall back to the template")
                served = ServedLLM(TemplateBackend(), version, RerankWeights(), f"LLM unavailable: {exc}")
            await self._swap(served)
            self._loaded = True
        log.info("LLM: %s", served.describe())

    async def aclose(self) -> None:
        for task in list(self._retiring):
            task.cancel()
        await self.current.backend.aclose()
