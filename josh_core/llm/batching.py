"""Micro-batching for in-process backends.

Callers `await submit(request)` from many coroutines at once (the JOSH engine gathers every
leaf of a depth). Whatever is waiting when the model becomes free goes to `run_batch` as ONE
list, which runs in a worker thread so the event loop keeps accepting requests meanwhile;
those then form the next batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from josh_core.llm.base import ChatRequest, ChatResponse


class MicroBatcher:
    def __init__(self, run_batch: Callable[[list[ChatRequest]], list[ChatResponse]], *,
                 max_rows: int = 32, collect_s: float = 0.0):
        self.run_batch = run_batch
        self.max_rows = max_rows  # cap on samples (requests x n) in one batch
        self.collect_s = collect_s  # extra wait for stragglers before a batch starts
        self._pending: list[tuple[ChatRequest, asyncio.Future]] = []
        self._worker: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batch_sizes: list[int] = []  # requests per batch run, for tests and benches

    async def submit(self, request: ChatRequest) -> ChatResponse:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (e.g. a second asyncio.run): start fresh
            self._loop, self._pending, self._worker = loop, [], None
        future: asyncio.Future = loop.create_future()
        self._pending.append((request, future))
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain())
        return await future

    def _take_batch(self) -> list[tuple[ChatRequest, asyncio.Future]]:
        batch: list[tuple[ChatRequest, asyncio.Future]] = []
        rows = 0
        while self._pending and (not batch or rows + self._pending[0][0].n <= self.max_rows):
            item = self._pending.pop(0)
            if item[1].cancelled():
                continue
            batch.append(item)
            rows += item[0].n
        return batch

    async def _drain(self) -> None:
        while self._pending:
            # Let every coroutine that was started together (asyncio.gather) enqueue first.
            for _ in range(3):
                await asyncio.sleep(0)
            if self.collect_s:
                await asyncio.sleep(self.collect_s)
            batch = self._take_batch()
            if not batch:
                continue
            self.batch_sizes.append(len(batch))
            try:
                responses = await asyncio.to_thread(self.run_batch, [r for r, _ in batch])
            except Exception as exc:  # every waiting caller gets the failure
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), response in zip(batch, responses):
                if not fut.done():
                    fut.set_result(response)

    async def aclose(self) -> None:
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()
        self._worker = None
