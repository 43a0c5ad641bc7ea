"""The request batcher on its own: which requests share a forward, and that every answer reaches its request.

Requests submitted in the same event-loop turn are all queued before the batcher runs, so the batches they form
do not depend on timing.
"""
from __future__ import annotations

import asyncio
import threading

import pytest

from ppyoloe_sod.serve.batching import QueueFullError, RequestBatcher


class Recorder:
    """detect_batch stand-in: answers each input with (input, batch number) and records the batches."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()

    def __call__(self, items: list[int]) -> list[tuple[int, int]]:
        self.threads.add(threading.current_thread().name)
        self.batches.append(list(items))
        return [(item, len(self.batches)) for item in items]


async def _submit_all(batcher: RequestBatcher, items: list[int]) -> list:
    await batcher.start()
    try:
        return await asyncio.gather(*(batcher.submit(i) for i in items), return_exceptions=True)
    finally:
        await batcher.close()


def test_requests_arriving_together_share_forwards_of_at_most_max_batch_size() -> None:
    detect = Recorder()
    answers = asyncio.run(_submit_all(RequestBatcher(detect, max_batch_size=4, max_wait_s=0.005), list(range(6))))
    assert detect.batches == [[0, 1, 2, 3], [4, 5]]
    assert answers == [(0, 1), (1, 1), (2, 1), (3, 1), (4, 2), (5, 2)]  # each request gets its own answer
    assert len(detect.threads) == 1 and threading.current_thread().name not in detect.threads  # off the loop


def test_max_batch_size_1_runs_one_forward_per_request() -> None:
    detect = Recorder()
    answers = asyncio.run(_submit_all(RequestBatcher(detect, max_batch_size=1), [7, 8, 9]))
    assert detect.batches == [[7], [8], [9]]
    assert [a[0] for a in answers] == [7, 8, 9]


def test_a_failing_forward_fails_every_request_of_its_batch_and_the_batcher_goes_on() -> None:
    calls = []

    def detect(items: list[int]) -> list[int]:
        calls.append(list(items))
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        return items

    async def scenario() -> tuple[list, int]:
        batcher = RequestBatcher(detect, max_batch_size=2)
        await batcher.start()
        try:
            first = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
            return first, await batcher.submit(3)
        finally:
            await batcher.close()

    first, after = asyncio.run(scenario())
    assert all(isinstance(e, RuntimeError) and "out of memory" in str(e) for e in first)
    assert after == 3


def test_a_full_queue_refuses_with_queue_full_and_queued_work_still_finishes() -> None:
    answers = asyncio.run(_submit_all(RequestBatcher(Recorder(), max_batch_size=8, max_queue=2), [1, 2, 3]))
    assert answers[:2] == [(1, 1), (2, 1)]
    assert isinstance(answers[2], QueueFullError) and "retry" in str(answers[2])


def test_close_answers_what_is_queued_then_refuses_new_requests() -> None:
    detect = Recorder()

    async def scenario() -> tuple[list, Exception | None]:
        batcher = RequestBatcher(detect, max_batch_size=2, max_wait_s=10.0)  # a wait that close() cuts short
        await batcher.start()
        pending = [asyncio.ensure_future(batcher.submit(i)) for i in range(3)]
        await asyncio.sleep(0)  # the submissions are queued
        await batcher.close()
        try:
            await batcher.submit(4)
            refused = None
        except RuntimeError as e:
            refused = e
        return [p.result() for p in pending], refused

    answers, refused = asyncio.run(scenario())
    assert [a[0] for a in answers] == [0, 1, 2]
    assert refused is not None and "shutting down" in str(refused)


@pytest.mark.parametrize("kwargs", [{"max_batch_size": 0}, {"max_queue": 0}, {"max_wait_s": -1}])
def test_impossible_settings_are_refused(kwargs) -> None:
    with pytest.raises(ValueError, match="must be"):
        RequestBatcher(Recorder(), **kwargs)
