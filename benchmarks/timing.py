"""The one timer the benchmarks share: best wall time of repeated calls (least disturbed by
other work on a shared machine)."""

from __future__ import annotations

import time


def best_of(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best
