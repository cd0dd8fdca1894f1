"""Timing helpers and the benchmark registry."""

import statistics
import time
from typing import Callable, Dict, List

BENCHMARKS: Dict[str, Callable[[], dict]] = {}


def benchmark(name: str):
    def register(function: Callable[[], dict]) -> Callable[[], dict]:
        BENCHMARKS[name] = function
        return function
    return register


def time_call(function: Callable[[], object], repeats: int = 50, warmup: int = 3) -> dict:
    """Median and 95th percentile wall time of `function` in milliseconds."""
    for _ in range(warmup):
        function()
    samples: List[float] = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        samples.append((time.perf_counter() - started) * 1000)
    return summarise(samples)


def summarise(samples_ms: List[float]) -> dict:
    ordered = sorted(samples_ms)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {"median_ms": round(statistics.median(ordered), 3), "p95_ms": round(p95, 3),
            "runs": len(ordered)}
