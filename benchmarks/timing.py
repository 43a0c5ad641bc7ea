"""Wall-clock timing shared by the benchmarks: warm-up calls, then the median of repeated calls."""
from __future__ import annotations

import statistics
import time
from typing import Callable


def timed(fn: Callable[[], object], runs: int, warmup: int = 1) -> tuple[float, list[float]]:
    """(median seconds, every run's seconds) of ``fn()`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times
