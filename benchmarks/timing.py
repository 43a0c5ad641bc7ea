"""Wall-clock timing shared by the benchmarks: warm-up calls, then the median of repeated calls (of one function,
or of several timed in turn so that a change of machine load falls on all of them)."""
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


def interleaved(fns: dict[str, Callable[[], object]], runs: int) -> tuple[dict[str, float], dict[str, object]]:
    """(median seconds, last output) of each function, after one untimed call each, timed in turn ``runs`` times."""
    outputs = {name: fn() for name, fn in fns.items()}
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            start = time.perf_counter()
            outputs[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}, outputs
