"""Small pieces the benchmarks share: a free loopback port, median and p95 of timings."""

from __future__ import annotations

import socket
import statistics

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def percentile(values: list[float], p: float) -> float:
    """The ``p`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


def median_p95(values: list[float], digits: int = 3) -> dict[str, float]:
    """``{"median": ..., "p95": ...}`` of ``values``, rounded to ``digits``."""
    return {
        "median": round(statistics.median(values), digits),
        "p95": round(percentile(values, 0.95), digits),
    }
