"""Wall-clock timing shared by the benchmark scripts (imported as ``_timing``: each script's folder is on sys.path)."""
from __future__ import annotations

import statistics
import time
from typing import Callable


def wall_times(fn: Callable[[], object], repeats: int, warmup: bool = True) -> list[float]:
    """Seconds taken by each of ``repeats`` calls of ``fn``, after one untimed call when ``warmup``."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median_seconds(fn: Callable[[], object], repeats: int, warmup: bool = True) -> float:
    """Median of :func:`wall_times`."""
    return statistics.median(wall_times(fn, repeats, warmup))
