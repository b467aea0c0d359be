"""What the service's metrics compute when asked: the scrape-time series and ``/healthz``.

``LiveCollector`` yields, at each Prometheus scrape, the series that are read rather than
recorded (frames a camera delivered, last-seen ages, the MQTT sink's stats, GPU memory, OS
threads); ``judge_health`` turns a ``Metrics``' last-seen times and MQTT state into the
``/healthz`` verdict. The small protocols say what ``Metrics`` reads from the sink and sources
it watches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from prometheus_client.metrics_core import Metric

    from edgeyolo.metrics import Metrics

NAMESPACE = "edgeyolo"


@dataclass(frozen=True, slots=True)
class MqttStats:
    """The MQTT sink's state as last reported to ``Metrics.mqtt``."""

    connected: bool
    reconnects: int
    outbox: int
    dropped: int
    published: int | None = None


class MqttReport(Protocol):
    """The MQTT sink's counters (``MqttSinkStats``), as ``MqttSource.stats`` returns them."""

    @property
    def connected(self) -> bool: ...
    @property
    def reconnects(self) -> int: ...
    @property
    def outbox(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    @property
    def published(self) -> int: ...


class SourceCounts(Protocol):
    """What ``Metrics.watch_source`` reads when scraped (a capture source's stats)."""

    @property
    def captured(self) -> int:
        """Frames the camera delivered to its pipeline (processed or dropped)."""
        ...


class MqttSource(Protocol):
    """What ``Metrics.watch_mqtt`` reads when scraped (the MQTT sink)."""

    def stats(self) -> MqttReport: ...
    @property
    def down_since(self) -> float | None:
        """``time.monotonic()`` since when disconnected; None while connected."""
        ...


def mqtt_within_bounds(connected: bool, outbox: int, outbox_limit: int) -> bool:
    """Connected, or disconnected but still buffering with room left in the outbox.

    ``outbox_limit`` is the sink's outbox capacity: once the outbox is full the sink drops
    messages. ``Metrics.mqtt_ok`` adds the time limit that ``/healthz`` uses.
    """
    return connected or outbox < outbox_limit


def _os_threads() -> int | None:
    # Counts every OS thread (ONNX Runtime's pools, capture threads), not just Python's.
    try:
        text = Path("/proc/self/status").read_text(encoding="ascii")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return None


def judge_health(
    m: Metrics,
    now: float,
    max_age_s: float,
    expected_cameras: Iterable[str],
    expected_engines: Iterable[str],
    mqtt_ok: bool | None,
) -> tuple[bool, dict[str, Any]]:
    """Judge the service at monotonic time ``now``.

    Healthy when every expected camera delivered a frame and every expected engine
    completed an inference within ``max_age_s`` seconds, and ``mqtt_ok`` is not False
    (None: MQTT is off; otherwise usually ``m.mqtt_ok(now, max_age_s, outbox_size)``).
    The detail dict is the ``/healthz`` JSON body: ``unhealthy`` names each failing part
    (``camera:NAME``, ``engine:NAME``, ``mqtt``) and each part carries its age or stats
    and a ``reason`` when it fails.
    """
    unhealthy: list[str] = []

    def judge(kind: str, name: str, seen: float | None, what: str) -> dict[str, Any]:
        age = None if seen is None else max(0.0, now - seen)
        part: dict[str, Any] = {"ok": True, "age_s": None if age is None else round(age, 3)}
        if age is None:
            part["ok"] = False
            part["reason"] = f"no {what} yet"
        elif age > max_age_s:
            part["ok"] = False
            part["reason"] = f"no {what} for {age:.1f} s (limit {max_age_s:g} s)"
        if not part["ok"]:
            unhealthy.append(f"{kind}:{name}")
        return part

    cameras = {
        cam: judge("camera", cam, m.last_frame.get(cam), "frame") for cam in expected_cameras
    }
    engines = {}
    for eng in expected_engines:
        part = judge("engine", eng, m.last_inference.get(eng), "completed inference")
        part["failures"] = m._failures.get(eng, 0)
        engines[eng] = part
    mqtt: dict[str, Any] | None = None
    if mqtt_ok is not None:
        mqtt = {"ok": mqtt_ok}
        stats = m._read_mqtt()
        if stats is not None:
            mqtt.update(
                connected=stats.connected,
                reconnects=stats.reconnects,
                outbox=stats.outbox,
                dropped=stats.dropped,
            )
        if m._mqtt_down_since is not None:
            mqtt["down_s"] = round(max(0.0, now - m._mqtt_down_since), 3)
        if not mqtt_ok:
            if stats is None:
                mqtt["reason"] = "the MQTT sink has not reported yet"
            elif stats.connected:
                mqtt["reason"] = "MQTT reported unhealthy"
            else:
                mqtt["reason"] = (
                    f"disconnected for {mqtt.get('down_s', 0.0):.1f} s "
                    f"with {stats.outbox} message(s) in the outbox"
                )
            unhealthy.append("mqtt")
    healthy = not unhealthy
    detail: dict[str, Any] = {
        "status": "ok" if healthy else "unhealthy",
        "unhealthy": unhealthy,
        "max_age_s": max_age_s,
        "cameras": cameras,
        "engines": engines,
        "mqtt": mqtt,
    }
    return healthy, detail


class LiveCollector:
    """Series computed at scrape time from the last-seen times and reported stats."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._m
        now = m._clock()
        captured = CounterMetricFamily(
            f"{NAMESPACE}_frames_captured",
            "Frames a camera delivered to its pipeline (processed + dropped).",
            labels=["camera"],
        )
        with m._captured_lock:
            counts = dict(m._captured)
        for cam, source in m._sources.items():
            counts[cam] = source.captured
        for cam, n in sorted(counts.items()):
            captured.add_metric([cam], n)
        yield captured
        frame_age = GaugeMetricFamily(
            f"{NAMESPACE}_last_frame_age_seconds",
            "Seconds since the camera last delivered a frame.",
            labels=["camera"],
        )
        for cam, seen in sorted(m.last_frame.items()):
            frame_age.add_metric([cam], max(0.0, now - seen))
        yield frame_age
        infer_age = GaugeMetricFamily(
            f"{NAMESPACE}_last_inference_age_seconds",
            "Seconds since the engine last completed an inference.",
            labels=["engine"],
        )
        for eng, seen in sorted(m.last_inference.items()):
            infer_age.add_metric([eng], max(0.0, now - seen))
        yield infer_age
        overflows = CounterMetricFamily(
            f"{NAMESPACE}_gpu_decode_overflows",
            "Frames whose candidates exceeded tensorrt.gpu.decode_capacity (decoded on the CPU "
            "from the full output instead).",
            labels=["engine"],
        )
        for eng, engine in sorted(m._engines.items()):
            decode = getattr(engine, "gpu_decode", None)
            if decode is not None:
                overflows.add_metric([eng], int(decode.overflows))
        yield overflows
        threads = _os_threads()
        if threads is not None:
            yield GaugeMetricFamily(
                f"{NAMESPACE}_process_threads", "OS threads of this process.", value=threads
            )
        stats = m._read_mqtt()
        if stats is not None:
            # The sink keeps its own totals; they are exposed as they are (a sink restarted
            # by a reload starts again at zero, which Prometheus treats as a counter reset).
            yield GaugeMetricFamily(
                f"{NAMESPACE}_mqtt_connected",
                "1 while connected to the MQTT broker.",
                value=int(stats.connected),
            )
            yield CounterMetricFamily(
                f"{NAMESPACE}_mqtt_reconnects",
                "Reconnections to the MQTT broker.",
                value=stats.reconnects,
            )
            yield GaugeMetricFamily(
                f"{NAMESPACE}_mqtt_outbox_messages",
                "Messages waiting in the MQTT sink's outbox.",
                value=stats.outbox,
            )
            yield CounterMetricFamily(
                f"{NAMESPACE}_mqtt_dropped",
                "Messages the MQTT sink dropped because its outbox was full.",
                value=stats.dropped,
            )
            if stats.published is not None:
                yield CounterMetricFamily(
                    f"{NAMESPACE}_mqtt_published",
                    "Messages the MQTT sink handed to the broker.",
                    value=stats.published,
                )
        if m._gpu is not None:
            used, total = m._gpu
            yield GaugeMetricFamily(
                f"{NAMESPACE}_gpu_memory_used_bytes", "GPU memory in use, bytes.", value=used
            )
            yield GaugeMetricFamily(
                f"{NAMESPACE}_gpu_memory_total_bytes", "GPU memory in all, bytes.", value=total
            )
