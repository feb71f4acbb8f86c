"""The in-process backend: transformers on this machine's CPU (or GPU), adapter merged in.

Every model call runs on one worker thread, so the event loop never blocks and two batches
never fight over the cores. Explanation streams are micro-batched: streams that arrive
within ``window_s`` of each other (up to ``max_batch``) are decoded together, which costs
little more per step than one stream alone. A bounded queue holds the streams waiting for
the next batch; beyond it, ``Overloaded``. A stream whose consumer goes away is stopped at
the next decoding step, and the batch ends once none of its streams is wanted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ml.llm.backends import ExplainRequest, LLMError, NullObserver, Observer, Overloaded, ScoreRequest
from ml.llm.prompts import PromptBuilder, explanation_messages, explanation_opening
from ml.llm.scoring import yes_probabilities

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
_DONE = object()


@dataclass
class _Job:
    messages: list[dict[str, str]]
    opening: str  # the answer's first words, given to the model and sent with its first token
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    text: str = ""

    def push(self, item: Any) -> None:
        if not self.loop.is_closed():  # a consumer whose loop has ended wants nothing more
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


class _BatchStreamer:
    """A transformers streamer for a batch: decodes each row's new tokens and hands the new
    text to that row's job as it appears."""

    def __init__(self, tokenizer: Any, jobs: Sequence[_Job], eos_ids: set[int], observer: Observer) -> None:
        self.tokenizer = tokenizer
        self.jobs = jobs
        self.eos_ids = eos_ids
        self.observer = observer
        self.tokens: list[list[int]] = [[] for _ in jobs]
        self.finished = [False] * len(jobs)
        self._prompt_seen = False
        self._ended = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate() hands over the prompt first
            self._prompt_seen = True
            return
        new = 0
        for i, token in enumerate(value.view(-1).tolist()):
            if self.finished[i] or self.jobs[i].cancelled.is_set():
                continue
            if token in self.eos_ids:
                self.finished[i] = True
                continue
            self.tokens[i].append(token)
            new += 1
            self._emit(i)
        self.observer.tokens(new)

    def _emit(self, i: int) -> None:
        job = self.jobs[i]
        text = self.tokenizer.decode(self.tokens[i], skip_special_tokens=True)
        if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
            return
        text = f"{job.opening} {text.lstrip()}"
        if len(text) > len(job.text):
            job.push(text[len(job.text) :])
            job.text = text

    def end(self) -> None:
        """Called by generate() when it finishes, and again by us if it raised: once is enough."""
        if not self._ended:
            self._ended = True
            for job in self.jobs:
                job.push(_DONE)


class _StopCancelled:
    """Stopping criterion: a row is done when its consumer has gone."""

    def __init__(self, jobs: Sequence[_Job]) -> None:
        self.jobs = jobs

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        import torch

        return torch.tensor([j.cancelled.is_set() for j in self.jobs], device=input_ids.device)


class TransformersBackend:
    name = "transformers"
    source = "llm"
    can_score = True

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_new_tokens: int = 64,
        max_batch: int = 8,
        max_pending: int = 32,
        window_s: float = 0.02,
        observer: Observer | None = None,
        generate_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.builder = PromptBuilder(tokenizer)
        self.max_new_tokens = max_new_tokens
        self.max_batch = max_batch
        self.window_s = window_s
        self.observer = observer or NullObserver()
        self.generate_kwargs = generate_kwargs or {}
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="cinerec-llm")
        self._pending: asyncio.Queue[_Job] = asyncio.Queue(maxsize=max_pending)
        self._dispatcher: asyncio.Task[None] | None = None
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()
        eos = tokenizer.eos_token_id
        self._eos_ids = {int(e) for e in (eos if isinstance(eos, list) else [eos])}

    # -- scoring -------------------------------------------------------------------------
    async def score(self, requests: Sequence[ScoreRequest]) -> list[np.ndarray]:
        if not requests:
            return []
        return await self._run(self._score_sync, list(requests))

    async def _run(self, work: Any, *args: Any) -> Any:
        """``work`` on the model's one worker thread, counted while it runs."""
        self._running += 1
        self._idle.clear()
        self.observer.running(self._running)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, work, *args)
        finally:
            self._running -= 1
            self.observer.running(self._running)
            if not self._running:
                self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no model call is running (a stopped stream's batch has ended)."""
        await self._idle.wait()

    def _score_sync(self, requests: list[ScoreRequest]) -> list[np.ndarray]:
        prompts = [self.builder.preference(r) for r in requests]
        self.observer.batch("score", sum(len(r.candidates) for r in requests))
        return yes_probabilities(
            self.model,
            prompts,
            yes_id=self.builder.yes_id,
            no_id=self.builder.no_id,
            pad_id=int(self.tokenizer.pad_token_id),
        )

    # -- generation ----------------------------------------------------------------------
    def _job(self, request: ExplainRequest) -> _Job:
        return _Job(
            explanation_messages(request),
            explanation_opening(request),
            asyncio.get_running_loop(),
        )

    async def stream(self, request: ExplainRequest) -> AsyncIterator[str]:
        job = self._job(request)
        try:
            self._pending.put_nowait(job)
        except asyncio.QueueFull:
            raise Overloaded(
                f"{self._pending.maxsize} explanation streams are already waiting: retry shortly"
            ) from None
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch())
        try:
            while (item := await job.queue.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise LLMError(f"generation failed: {item}") from item
                yield item
        finally:
            job.cancelled.set()  # consumer gone or done: stop decoding this row

    async def explain_many(self, requests: Sequence[ExplainRequest]) -> list[str]:
        if not requests:
            return []
        jobs = [self._job(r) for r in requests]
        try:
            await self._run(self._generate_sync, jobs)
        finally:
            for job in jobs:
                job.cancelled.set()
        for job in jobs:
            while not job.queue.empty():
                item = job.queue.get_nowait()
                if isinstance(item, BaseException):
                    raise LLMError(f"generation failed: {item}") from item
        return [job.text.strip() for job in jobs]

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._pending.get()]
            deadline = loop.time() + self.window_s
            while len(batch) < self.max_batch and (left := deadline - loop.time()) > 0:
                try:
                    batch.append(await asyncio.wait_for(self._pending.get(), left))
                except TimeoutError:
                    break
            batch = [job for job in batch if not job.cancelled.is_set()]
            if batch:
                await self._run(self._generate_sync, batch)

    def _generate_sync(self, jobs: list[_Job]) -> None:
        import torch
        from transformers import StoppingCriteriaList

        streamer = _BatchStreamer(self.tokenizer, jobs, self._eos_ids, self.observer)
        try:
            texts = [
                self.tokenizer.apply_chat_template(j.messages, tokenize=False, add_generation_prompt=True)
                + j.opening
                for j in jobs
            ]
            inputs = self.tokenizer(
                texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False
            ).to(self.model.device)
            self.observer.batch("generate", len(jobs))
            with torch.inference_mode():
                self.model.generate(
                    **inputs,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    repetition_penalty=1.15,
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([_StopCancelled(jobs)]),
                    pad_token_id=int(self.tokenizer.pad_token_id),
                    **self.generate_kwargs,
                )
        except Exception as exc:  # every waiting consumer hears of it; the worker goes on
            log.exception("generation batch failed")
            for job in jobs:
                job.push(exc)
        finally:
            streamer.end()

    async def aclose(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
        self._executor.shutdown(wait=False, cancel_futures=True)
