"""The in-process backend: transformers on this machine's CPU (or GPU), adapter merged in.

Every model call runs on one worker thread, so the event loop never blocks and two batches
never fight over the cores. Explanations are decoded with continuous batching: one running
batch, one token per row per step, which costs little more per step than one row alone. An
answer asked for while others decode joins the batch at the next step (after its own
prefill), up to ``max_batch`` rows; a row leaves at once when it ends, reaches
``max_new_tokens`` or its consumer goes away. Decoding is greedy with ``generate``'s
repetition penalty, written out here because ``generate`` cannot take rows mid-run
(transformers' own continuous-batching manager sizes a paged cache for accelerators). A
bounded queue holds the streams waiting for room; beyond it, ``Overloaded``. Scoring runs on
the same thread between decoding steps.
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

from ml.llm.backends import (
    Decoding,
    ExplainRequest,
    LLMError,
    NullObserver,
    Observer,
    Overloaded,
    ScoreRequest,
)
from ml.llm.constrain import GenreGuard, GuardTokens
from ml.llm.prompts import PromptBuilder
from ml.llm.scoring import left_pad, positions, yes_probabilities

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
_DONE = object()


@dataclass
class _Job:
    prompt: str  # the chat as the model reads it, ending with the opening
    opening: str  # the answer's first words, given to the model and sent with its first token
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    text: str = ""
    guard: GenreGuard | None = None  # bans genre words a comparison would make false

    def push(self, item: Any) -> None:
        if not self.loop.is_closed():  # a consumer whose loop has ended wants nothing more
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


@dataclass
class _Row:
    """One answer being decoded in the running batch."""

    job: _Job
    seen: list[int]  # prompt and answer tokens: what the repetition penalty looks at
    position: int  # the position of the next token fed to the model
    answer: list[int] = field(default_factory=list)
    next_token: int = -1  # chosen, not yet fed to the model


class _Batch:
    """The running batch of a continuous-batching decoder: one key/value cache for every row,
    left-padded to a common length. Rows join (``add``) after their own prefill, between
    decoding steps; rows that finished or whose consumer left go (``keep``) at once. Used by
    the model's worker thread only."""

    def __init__(self) -> None:
        self.rows: list[_Row] = []
        self.cache: Any = None
        self.mask: torch.Tensor | None = None  # (rows, cached length): 1 where a row has a token

    def add(self, rows: list[_Row], cache: Any, mask: torch.Tensor) -> None:
        import torch
        import torch.nn.functional as F

        if not self.rows:
            self.rows, self.cache, self.mask = rows, cache, mask
            return
        assert self.mask is not None
        width = max(self.mask.shape[1], mask.shape[1])

        def left(t: torch.Tensor, dim_from_end: int) -> torch.Tensor:
            missing = width - t.shape[-dim_from_end]
            pad = [0, 0] * (dim_from_end - 1) + [missing, 0]
            return F.pad(t, pad) if missing else t

        for mine, theirs in zip(self.cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat([left(mine.keys, 2), left(theirs.keys, 2)])
            mine.values = torch.cat([left(mine.values, 2), left(theirs.values, 2)])
        self.mask = torch.cat([left(self.mask, 1), left(mask, 1)])
        self.rows += rows

    def keep(self, keep: list[int]) -> None:
        import torch

        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        if not self.rows:
            self.cache = self.mask = None
            return
        assert self.mask is not None
        index = torch.as_tensor(keep, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.mask = self.mask[index]
        # columns no remaining row uses (the left padding of a row that left) are dropped
        first = int((self.mask.sum(0) > 0).nonzero()[0])
        if first:
            self.mask = self.mask[:, first:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]


class TransformersBackend:
    name = "transformers"
    source = "llm"
    can_score = True

    def __init__(
        self, model: Any, tokenizer: Any, decoding: Decoding = Decoding(), *, observer: Observer | None = None
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.builder = PromptBuilder(tokenizer)
        self.decoding = decoding
        self.observer = observer or NullObserver()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="cinerec-llm")
        self._pending: asyncio.Queue[_Job] = asyncio.Queue(maxsize=decoding.max_pending)
        self._direct: list[_Job] = []  # whole answers asked for by explain_many
        self._wake = asyncio.Event()
        self._decoder: asyncio.Task[None] | None = None
        self._decoding = False
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()
        eos = tokenizer.eos_token_id
        self._eos_ids = {int(e) for e in (eos if isinstance(eos, list) else [eos])}
        self._guard_tokens = GuardTokens.of(tokenizer, sorted(self._eos_ids))

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
        guard = None
        if self.decoding.constrain_genres and request.facts is not None:
            guard = GenreGuard(
                request.facts, self._guard_tokens, opening=request.opening, title=request.title
            )
        return _Job(
            self.builder.explanation(request),
            request.opening,
            asyncio.get_running_loop(),
            guard=guard,
        )

    def _start_decoder(self) -> None:
        if self._decoder is None or self._decoder.done():
            self._decoder = asyncio.create_task(self._decode())

    async def stream(self, request: ExplainRequest) -> AsyncIterator[str]:
        job = self._job(request)
        try:
            self._pending.put_nowait(job)
        except asyncio.QueueFull:
            raise Overloaded(
                f"{self._pending.maxsize} explanation streams are already waiting: retry shortly"
            ) from None
        self._start_decoder()
        try:
            while (item := await job.queue.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise LLMError(f"generation failed: {item}") from item
                yield item
        finally:
            job.cancelled.set()  # consumer gone or done: its row leaves the batch at the next step

    async def explain_many(self, requests: Sequence[ExplainRequest]) -> list[str]:
        """Whole answers: the rows join the running batch like streams (a request's count is
        bounded by its caller, so they skip the stream queue's limit) and are read at the end."""
        if not requests:
            return []
        jobs = [self._job(r) for r in requests]
        self._direct += jobs
        self._start_decoder()
        self._wake.set()
        try:
            for job in jobs:
                while (item := await job.queue.get()) is not _DONE:
                    if isinstance(item, BaseException):
                        raise LLMError(f"generation failed: {item}") from item
        finally:
            for job in jobs:
                job.cancelled.set()
        return [job.text.strip() for job in jobs]

    async def _decode(self) -> None:
        """Continuous batching: while rows decode, one step at a time on the model's thread
        (scoring runs between steps); before each step, waiting answers join, up to
        ``max_batch`` rows. An empty batch waits ``window_s`` after the first arrival for
        companions, so that answers asked for together start together."""
        batch = _Batch()
        while True:
            if not batch.rows and not self._direct and self._pending.empty():
                await self._wait_for_work()
            joining = self._next_joiners(self.decoding.max_batch - len(batch.rows))
            if not batch.rows and not joining:
                continue
            self._active(True)
            try:
                await self._run(self._step, batch, joining)
            finally:
                self._active(bool(batch.rows))

    async def _wait_for_work(self) -> None:
        """Sleep until an answer is asked for (or a direct row is woken in), then gather the
        companions that arrive within ``window_s``."""
        loop = asyncio.get_running_loop()
        self._wake.clear()
        waiter = asyncio.ensure_future(self._pending.get())
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({waiter, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            if not waiter.done():
                waiter.cancel()
        if waiter.done() and not waiter.cancelled():
            self._direct.insert(0, waiter.result())
        deadline = loop.time() + self.decoding.window_s
        while (left := deadline - loop.time()) > 0 and len(self._direct) < self.decoding.max_batch:
            try:
                self._direct.append(await asyncio.wait_for(self._pending.get(), left))
            except TimeoutError:
                break

    def _next_joiners(self, room: int) -> list[_Job]:
        """Up to ``room`` waiting jobs, direct rows first; cancelled ones are dropped."""
        joining: list[_Job] = []
        while self._direct and len(joining) < room:
            joining.append(self._direct.pop(0))
        while not self._pending.empty() and len(joining) < room:
            joining.append(self._pending.get_nowait())
        joining = [job for job in joining if not job.cancelled.is_set()]
        for job in joining:
            job.text = ""
        return joining

    def _active(self, decoding: bool) -> None:
        """Idle (``wait_idle``) means no row is decoding, not just no step running."""
        if decoding and not self._decoding:
            self._decoding = True
            self._running += 1
            self._idle.clear()
            self.observer.running(self._running)
        elif not decoding and self._decoding:
            self._decoding = False
            self._running -= 1
            self.observer.running(self._running)
            if not self._running:
                self._idle.set()

    def _step(self, batch: _Batch, joining: list[_Job]) -> None:
        """Prefill the joining rows, then decode one token for every row."""
        import torch

        try:
            with torch.inference_mode():
                if joining:
                    self._prefill(batch, joining)
                self._drop_finished(batch)
                if batch.rows:
                    self._decode_step(batch)
                    self._drop_finished(batch)
        except Exception as exc:  # every waiting consumer hears of it; the worker goes on
            log.exception("generation step failed")
            for row in batch.rows:
                row.job.push(exc)
                row.job.push(_DONE)
            for job in joining:
                if all(job is not r.job for r in batch.rows):
                    job.push(exc)
                    job.push(_DONE)
            batch.keep([])

    def _prefill(self, batch: _Batch, jobs: list[_Job]) -> None:
        from transformers import DynamicCache

        prompts = [self.tokenizer.encode(j.prompt, add_special_tokens=False) for j in jobs]
        ids, mask = left_pad(prompts, int(self.tokenizer.pad_token_id), self.model.device)
        cache = DynamicCache()
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions(mask),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,  # the next token only: the head over every prompt position cost 18%
        )
        rows = [_Row(job, list(p), len(p)) for job, p in zip(jobs, prompts, strict=True)]
        self.observer.batch("generate", len(batch.rows) + len(rows))  # rows decoding from now on
        self._choose(rows, out.logits[:, -1, :])
        batch.add(rows, out.cache, mask)

    def _decode_step(self, batch: _Batch) -> None:
        import torch

        assert batch.mask is not None
        device = batch.mask.device
        ids = torch.as_tensor([[r.next_token] for r in batch.rows], device=device)
        batch.mask = torch.cat(
            [batch.mask, torch.ones((len(batch.rows), 1), dtype=batch.mask.dtype, device=device)], 1
        )
        position = torch.as_tensor([[r.position] for r in batch.rows], device=device)
        out = self.model(
            input_ids=ids,
            attention_mask=batch.mask,
            position_ids=position,
            cache=batch.cache,
            use_cache=True,
        )
        batch.cache = out.cache
        for row in batch.rows:
            row.seen.append(row.next_token)
            row.position += 1
        self._choose(batch.rows, out.logits[:, -1, :])

    def _choose(self, rows: list[_Row], logits: torch.Tensor) -> None:
        """Greedy next token per row under the repetition penalty (as ``generate`` applies it,
        over the row's prompt and answer), handed to the row's consumer as text."""
        import torch

        scores = logits.float()
        width = max(len(r.seen) for r in rows)
        seen = torch.as_tensor(
            [r.seen + [r.seen[0]] * (width - len(r.seen)) for r in rows], device=scores.device
        )
        picked = scores.gather(1, seen)
        picked = torch.where(
            picked < 0, picked * self.decoding.repetition_penalty, picked / self.decoding.repetition_penalty
        )
        scores = scores.scatter(1, seen, picked)
        if self.decoding.min_new_tokens:
            early = torch.as_tensor(
                [len(r.answer) < self.decoding.min_new_tokens for r in rows], device=scores.device
            )
            for eos in self._eos_ids:
                scores[early, eos] = float("-inf")
        for i, row in enumerate(rows):
            if row.job.guard is None:
                continue
            text = row.job.text or row.job.opening
            if (only := row.job.guard.only(text, row.answer)) is not None:
                keep = scores[i, only].clone()
                scores[i, :] = float("-inf")
                scores[i, only] = keep
            elif banned := row.job.guard.banned(text, row.answer):
                scores[i, banned] = float("-inf")
        new = 0
        for row, token in zip(rows, scores.argmax(-1).tolist(), strict=True):
            row.next_token = token
            if token in self._eos_ids or row.job.cancelled.is_set():
                continue
            row.answer.append(token)
            new += 1
            self._emit(row)
        self.observer.tokens(new)

    def _emit(self, row: _Row) -> None:
        job = row.job
        text = self.tokenizer.decode(row.answer, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
            return
        text = f"{job.opening} {text.lstrip()}"
        if len(text) > len(job.text):
            job.push(text[len(job.text) :])
            job.text = text

    def _drop_finished(self, batch: _Batch) -> None:
        keep = []
        for i, row in enumerate(batch.rows):
            done = (
                row.next_token in self._eos_ids
                or len(row.answer) >= self.decoding.max_new_tokens
                or row.job.cancelled.is_set()
            )
            if done:
                row.job.push(_DONE)
            else:
                keep.append(i)
        batch.keep(keep)

    async def aclose(self) -> None:
        if self._decoder is not None:
            self._decoder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._decoder
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._running:  # a closed backend runs nothing more: take its calls off the gauge
            self._running, self._decoding = 0, False
            self.observer.running(0)
            self._idle.set()
