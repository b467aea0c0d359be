"""``/api/status``: cameras and models with fps, latency percentiles, drops, health and MQTT.

Built from what the service already keeps: the health judgement (``Metrics.health``), each
camera's source counters and the live view's rolling numbers. Read-only and quick: it runs
on the event loop for each request.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

from edgeyolo import __version__

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from edgeyolo.live import LiveView


class _SourceStats(Protocol):
    @property
    def dropped(self) -> int: ...


class _Source(Protocol):
    @property
    def stats(self) -> _SourceStats: ...


class _Runner(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def failures(self) -> int: ...


class PipelineLike(Protocol):
    """What the status reads of a camera pipeline (``edgeyolo.pipeline.CameraPipeline``)."""

    @property
    def camera(self) -> str: ...
    @property
    def source(self) -> _Source: ...
    @property
    def runners(self) -> Sequence[_Runner]: ...


def camera_paths(camera: str) -> dict[str, str]:
    """The URLs of one camera's pictures (names are percent-encoded)."""
    from urllib.parse import quote  # noqa: PLC0415 - tiny, only needed here

    seg = quote(camera, safe="")
    return {
        "latest": f"/cameras/{seg}/latest.jpg",
        "stream": f"/cameras/{seg}/stream.mjpeg",
    }


def build_status(
    health_fn: Callable[[], tuple[bool, Mapping[str, Any]]],
    pipelines: Sequence[PipelineLike],
    live: LiveView | None,
    *,
    started: float,
    tasks: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The ``/api/status`` document (see docs/deploy.md for its fields)."""
    healthy, detail = health_fn()
    cam_health: Mapping[str, Any] = detail.get("cameras") or {}
    eng_health: Mapping[str, Any] = detail.get("engines") or {}
    cameras: list[dict[str, Any]] = []
    models: dict[str, dict[str, Any]] = {}
    for p in pipelines:
        feed = None if live is None else live.feeds.get(p.camera)
        st = None if feed is None else feed.stats()
        entry: dict[str, Any] = {
            "name": p.camera,
            "fps": None if st is None else st.fps,
            "frames": None if st is None else st.frames,
            "dropped": p.source.stats.dropped,
            "width": None if st is None else st.width,
            "height": None if st is None else st.height,
            "latency_ms": None if st is None else st.latency_ms,
            "health": cam_health.get(p.camera),
            "viewers": 0 if st is None else st.viewers,
            "encodes": 0 if st is None else st.encodes,
            "models": [
                {
                    "name": r.name,
                    "infer_ms": None if st is None else st.infer_ms.get(r.name),
                }
                for r in p.runners
            ],
        }
        if feed is not None:
            entry.update(camera_paths(p.camera))
        cameras.append(entry)
        for r in p.runners:
            m = models.setdefault(
                r.name,
                {
                    "name": r.name,
                    "task": (tasks or {}).get(r.name),
                    "cameras": [],
                    "failures": r.failures,
                    "health": eng_health.get(r.name),
                },
            )
            m["cameras"].append(p.camera)
    return {
        "status": "ok" if healthy else "unhealthy",
        "unhealthy": list(detail.get("unhealthy") or []),
        "version": __version__,
        "uptime_s": round(time.monotonic() - started, 1),
        "cameras": cameras,
        "models": list(models.values()),
        "mqtt": detail.get("mqtt"),
    }
