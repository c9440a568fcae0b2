"""What the in-process model benchmarks share (benchmarks/bench_model.py, gpu/check.py): the network's arithmetic
per image and a median timer for calls."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

# Multiply-adds of the network, x2: conv1 28*28*32*25, conv2 14*14*64*25*32, fc1 3136*1024, fc2 1024*10.
FLOPS_PER_IMAGE = 2 * (28 * 28 * 32 * 25 + 14 * 14 * 64 * 25 * 32 + 3136 * 1024 + 1024 * 10)


def timed(call: Callable[[], object], seconds: float) -> float:
    """Median seconds per call after a warm-up, over `seconds` (at least 5 calls)."""
    for _ in range(3):
        call()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
