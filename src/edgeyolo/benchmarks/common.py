"""Small pieces the benchmarks share: a free loopback port, median and p95 of timings, the
first camera's frames."""

from __future__ import annotations

import socket
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeyolo.errors import ConfigError, SourceError

if TYPE_CHECKING:
    from edgeyolo.config import Config

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


def camera_frames(cfg: Config, frames: int) -> list[Any]:
    """Up to ``frames`` frames of the config's first camera (a file source), or a
    ``ConfigError`` naming ``cameras[0].source`` when it cannot be read."""
    from edgeyolo.sources.files import iter_frames  # noqa: PLC0415

    cam = cfg.cameras[0]
    try:
        images: list[Any] = list(iter_frames(Path(str(cam.source)), frames))
    except SourceError as exc:
        raise ConfigError(f"cameras[0].source: {exc}") from exc
    if not images:
        raise ConfigError(f"cameras[0].source: cannot read frames from {cam.source}")
    return images
