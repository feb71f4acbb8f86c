"""Natural batching across requests: keys asked for while a batch is being worked on wait
for the next one, which takes them all at once.

A dataloader batches the keys of one request; under load the expensive steps (scoring,
reading users' ratings) are cheaper per key in bigger batches, so concurrent requests are
merged too. Nothing waits for company: an idle server runs each request's batch at once,
a busy one runs bigger batches, each in one call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Coalescer(Generic[K, V]):
    def __init__(self, work: Callable[[list[K]], Awaitable[dict[K, V]]], *, max_batch: int = 256) -> None:
        self.work = work
        self.max_batch = max_batch
        self._waiting: dict[K, list[asyncio.Future[V]]] = {}
        self._runner: asyncio.Task[None] | None = None

    async def get_many(self, keys: Sequence[K]) -> list[V]:
        loop = asyncio.get_running_loop()
        futures = []
        for key in keys:
            future: asyncio.Future[V] = loop.create_future()
            self._waiting.setdefault(key, []).append(future)
            futures.append(future)
        if self._runner is None or self._runner.done():
            self._runner = loop.create_task(self._run())
        return list(await asyncio.gather(*futures))

    async def _run(self) -> None:
        while self._waiting:
            batch = list(self._waiting)[: self.max_batch]
            taken = {k: self._waiting.pop(k) for k in batch}
            try:
                found = await self.work(batch)
            except BaseException as exc:
                for futures in taken.values():
                    for future in futures:
                        if not future.done():
                            future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for key, futures in taken.items():
                for future in futures:
                    if future.done():
                        continue
                    if key in found:
                        future.set_result(found[key])
                    else:
                        future.set_exception(KeyError(key))
