"""Micro-batching of concurrent query embeddings into one forward pass.

While one batch runs on the model thread, new queries queue up; the next forward pass takes
all of them (up to `max_batch`). A lone query pays no added latency, and under load the model
runs fewer, larger batches instead of contending for the CPU with many batch-1 calls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor

import numpy as np

log = logging.getLogger(__name__)

EmbedFn = Callable[[np.ndarray], np.ndarray]


class MicroBatcher:
    def __init__(
        self,
        embed: EmbedFn,
        executor: Executor,
        max_batch: int = 16,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._embed = embed
        self._on_batch = on_batch
        self._executor = executor
        self._max_batch = max_batch
        self._queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.items = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="query-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def embed_one(self, pixels: np.ndarray) -> np.ndarray:
        """Embed one (S, S, 3) uint8 image; returns its (D,) vector."""
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        await self._queue.put((pixels, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            pending = [await self._queue.get()]
            while len(pending) < self._max_batch and not self._queue.empty():
                pending.append(self._queue.get_nowait())
            live = [(p, f) for p, f in pending if not f.cancelled()]
            if not live:
                continue
            batch = np.stack([p for p, _ in live])
            try:
                vectors = await loop.run_in_executor(self._executor, self._embed, batch)
            except Exception as exc:  # hand the failure to every waiting request
                for _, future in live:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches += 1
            self.items += len(live)
            if self._on_batch:
                self._on_batch(len(live))
            for (_, future), vector in zip(live, vectors, strict=True):
                if not future.done():
                    future.set_result(vector)
