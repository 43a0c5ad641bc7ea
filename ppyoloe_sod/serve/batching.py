"""Requests that arrive together share one forward pass.

Each request hands its decoded image to :class:`RequestBatcher` and awaits its own detections. One task on the
event loop gathers waiting images into batches (up to ``max_batch_size``; the first image of a batch waits at
most ``max_wait_s`` for others) and runs the model on a single worker thread, so the event loop keeps serving
while the network runs and the network never runs twice at once. Images that queue up during a forward form the
next batch straight away. ``max_batch_size=1`` turns batching off (one forward per request).
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

log = logging.getLogger(__name__)

DetectBatch = Callable[[list[Any]], Sequence[Any]]


class QueueFullError(RuntimeError):
    """More requests are waiting for the model than the queue holds; the client should retry later."""


@dataclass
class BatchStats:
    """What the batcher has done so far (for logs, benchmarks and tests)."""

    batches: int = 0
    images: int = 0
    sizes: list[int] = field(default_factory=list)  # the size of every batch, in order


class RequestBatcher:
    """Gathers concurrent requests into batches for ``detect_batch`` (one call per batch, a list of inputs in,
    one output per input back, in order)."""

    def __init__(self, detect_batch: DetectBatch, max_batch_size: int = 8, max_wait_s: float = 0.005,
                 max_queue: int = 64):
        if max_batch_size < 1 or max_queue < 1 or max_wait_s < 0:
            raise ValueError(f"max_batch_size ({max_batch_size}) and max_queue ({max_queue}) must be >= 1 and "
                             f"max_wait_s ({max_wait_s}) >= 0")
        self._detect_batch = detect_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.stats = BatchStats()
        self._pending: deque[tuple[Any, asyncio.Future, float]] = deque()  # (input, its future, arrival time)
        self._arrived = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        """Start gathering (call from the running event loop, e.g. the app's startup)."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ppyoloe-sod-model")
        self._task = asyncio.get_running_loop().create_task(self._run_forever(), name="ppyoloe-sod-batcher")

    async def submit(self, item: Any) -> Any:
        """The output of ``detect_batch`` for ``item``, computed in some batch; its exception if the batch failed."""
        if self._task is None or self._closing:
            raise RuntimeError("the batcher is not running (not started yet, or shutting down)")
        if len(self._pending) >= self.max_queue:
            raise QueueFullError(f"{len(self._pending)} requests are already waiting for the model (Serve.max_queue)"
                                 f"; retry in a moment")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((item, future, loop.time()))
        self._arrived.set()
        return await future

    async def close(self) -> None:
        """Run what is queued, then stop; later submissions are refused."""
        self._closing = True
        self._arrived.set()
        if self._task is not None:
            await self._task
            self._task = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def _run_forever(self) -> None:
        while True:
            await self._arrived.wait()
            if not self._pending:
                if self._closing:
                    return
                self._arrived.clear()
                continue
            await self._fill()
            batch = [self._pending.popleft() for _ in range(min(self.max_batch_size, len(self._pending)))]
            if not self._pending and not self._closing:
                self._arrived.clear()
            await self._run_batch(batch)

    async def _fill(self) -> None:
        """Wait for the batch to fill until the oldest waiting input has waited max_wait_s (images that queued
        during the previous forward have waited already); at once when full or closing."""
        loop = asyncio.get_running_loop()
        deadline = self._pending[0][2] + self.max_wait_s
        while len(self._pending) < self.max_batch_size and not self._closing:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return

    async def _run_batch(self, batch: list[tuple[Any, asyncio.Future, float]]) -> None:
        batch = [(item, fut) for item, fut, _ in batch if not fut.done()]  # a client that went away cancels its future
        if not batch:
            return
        loop = asyncio.get_running_loop()
        self.stats.batches += 1
        self.stats.images += len(batch)
        self.stats.sizes.append(len(batch))
        try:
            outputs = await loop.run_in_executor(self._executor, self._detect_batch, [item for item, _ in batch])
            if len(outputs) != len(batch):
                raise RuntimeError(f"detect_batch returned {len(outputs)} outputs for {len(batch)} inputs")
        except Exception as e:  # every request of the batch gets the error (answered as a 500)
            log.exception("the model failed on a batch of %d image(s)", len(batch))
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(e)
            return
        for (_, fut), out in zip(batch, outputs):
            if not fut.done():
                fut.set_result(out)
