"""Prometheus metrics and health bookkeeping of one running service.

``Metrics`` owns its own ``CollectorRegistry`` (never prometheus_client's global one), so
several services, or several tests, can live in one process without sharing counters. Each
camera's pipeline reports every frame once to ``observe`` (a ``FrameObserver``), which feeds
the small recording methods below; ``edgeyolo.health`` serves the registry
as text on ``/metrics`` and asks ``Metrics.health`` for ``/healthz``. What is computed when
asked (scrape-time series, the health verdict) is in ``metrics_live``.

Every recording method is cheap and thread-safe (prometheus_client's metrics lock
internally; the last-seen dicts are written with single assignments under the GIL), so
capture threads may call ``frame_captured`` directly.

Metric names (all documented in docs/deploy.md, used by deploy/grafana/):

===========================================  =========  ==========  =============================
name                                         type       labels      set by
===========================================  =========  ==========  =============================
edgeyolo_build_info                          gauge      version     constructor (always 1)
edgeyolo_frames_captured_total               counter    camera      ``watch_source`` (scraped)
edgeyolo_frames_dropped_total                counter    camera      ``frames_dropped``
edgeyolo_inference_seconds                   histogram  engine      ``inference_seconds``
edgeyolo_stage_seconds                       histogram  stage       ``stage_seconds``
edgeyolo_e2e_seconds                         histogram  camera      ``e2e_seconds``
edgeyolo_engine_failures_total               counter    engine      ``engine_failed``
edgeyolo_batch_size                          histogram  engine      ``observe_batch`` (per call)
edgeyolo_batch_wait_seconds                  histogram  engine      ``observe_batch`` (per frame)
edgeyolo_last_frame_age_seconds              gauge      camera      computed when scraped
edgeyolo_last_inference_age_seconds          gauge      engine      computed when scraped
edgeyolo_mqtt_connected                      gauge                  ``watch_mqtt`` or ``mqtt``
edgeyolo_mqtt_reconnects_total               counter                ``watch_mqtt`` or ``mqtt``
edgeyolo_mqtt_outbox_messages                gauge                  ``watch_mqtt`` or ``mqtt``
edgeyolo_mqtt_dropped_total                  counter                ``watch_mqtt`` or ``mqtt``
edgeyolo_mqtt_published_total                counter                ``watch_mqtt`` or ``mqtt``
edgeyolo_gpu_decode_overflows_total          counter    engine      ``watch_engines`` (scraped)
edgeyolo_gpu_memory_used_bytes               gauge                  ``gpu_memory_bytes``
edgeyolo_gpu_memory_total_bytes              gauge                  ``gpu_memory_bytes``
edgeyolo_process_threads                     gauge                  /proc/self/status, scraped
process_resident_memory_bytes, process_open_fds, process_cpu_seconds_total, ...
                                             (prometheus_client's ProcessCollector, Linux only)
===========================================  =========  ==========  =============================
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from edgeyolo import __version__
from edgeyolo.metrics_live import (
    NAMESPACE,
    LiveCollector,
    MqttSource,
    MqttStats,
    SourceCounts,
    judge_health,
    mqtt_within_bounds,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from edgeyolo.batching import BatchReport
    from edgeyolo.telemetry import FrameTimings


# Buckets in seconds. Inference spans ~2 ms (TensorRT FP16 on Orin) to ~0.5 s (four models
# on a small CPU); the finer steps sit where a Jetson lives so its p95 is not one bucket wide.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    2.0,
    5.0,
)
# End to end adds queueing and capture waits on top; a stalled camera can take seconds.
E2E_BUCKETS: tuple[float, ...] = (*LATENCY_BUCKETS, 10.0, 30.0)

# Frames per engine call (max_batch is at most 64).
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)

#: Stage names the pipeline reports through ``Metrics.stage_seconds`` (docs/logging.md uses
#: the same names with an ``_ms`` suffix in the per-frame log line).
STAGES: tuple[str, ...] = ("capture_wait", "preprocess", "infer", "post", "emit")


class Metrics:
    """The service's Prometheus metrics plus the last-seen times that ``/healthz`` judges.

    ``clock`` is the monotonic clock used for last-seen times (``time.monotonic``); tests may
    pass another. ``process=False`` leaves out the process_* metrics.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        process: bool = True,
    ) -> None:
        self.registry = CollectorRegistry()
        self._clock = clock
        self.last_frame: dict[str, float] = {}
        self.last_inference: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._dropped_seen: dict[str, int] = {}
        # Frames captured per camera: read from the source when watched (what the camera
        # delivered, processed or dropped), else counted by ``frame_captured``.
        self._sources: dict[str, SourceCounts] = {}
        self._captured: dict[str, int] = {}
        self._captured_lock = threading.Lock()
        self._mqtt: MqttStats | None = None
        self._mqtt_source: MqttSource | None = None
        self._mqtt_down_since: float | None = None
        self._created = clock()
        self._gpu: tuple[int, int] | None = None
        self._engines: dict[str, object] = {}
        reg = self.registry
        Gauge(
            "build_info",
            "edgeyolo version running (always 1).",
            ["version"],
            namespace=NAMESPACE,
            registry=reg,
        ).labels(__version__).set(1)
        self._dropped = Counter(
            "frames_dropped",
            "Frames a camera's pipeline dropped (latest frame wins; dropped when busy).",
            ["camera"],
            namespace=NAMESPACE,
            registry=reg,
        )
        self._inference = Histogram(
            "inference_seconds",
            "Time of one inference of one engine (enqueue to outputs ready), seconds.",
            ["engine"],
            namespace=NAMESPACE,
            registry=reg,
            buckets=LATENCY_BUCKETS,
        )
        self._stage = Histogram(
            "stage_seconds",
            "Time of one pipeline stage for one frame, seconds "
            "(stages: capture_wait, preprocess, infer, post, emit).",
            ["stage"],
            namespace=NAMESPACE,
            registry=reg,
            buckets=LATENCY_BUCKETS,
        )
        self._e2e = Histogram(
            "e2e_seconds",
            "Capture to events emitted, per frame, seconds.",
            ["camera"],
            namespace=NAMESPACE,
            registry=reg,
            buckets=E2E_BUCKETS,
        )
        self._engine_failures = Counter(
            "engine_failures",
            "Inferences that raised; the engine is isolated and the frame goes on without it.",
            ["engine"],
            namespace=NAMESPACE,
            registry=reg,
        )
        self._batch_size = Histogram(
            "batch_size",
            "Frames in one engine call (1 without batching); its _count rate is calls per second.",
            ["engine"],
            namespace=NAMESPACE,
            registry=reg,
            buckets=BATCH_BUCKETS,
        )
        self._batch_wait = Histogram(
            "batch_wait_seconds",
            "Time a frame waited for its engine call (other cameras' frames, the engine's lock).",
            ["engine"],
            namespace=NAMESPACE,
            registry=reg,
            buckets=LATENCY_BUCKETS,
        )
        self._reloads = Counter(
            "config_reloads",
            "SIGHUP reloads by result: accepted (restarted with the new config), rejected "
            "(invalid; the running config kept), failed (did not start; back to the old one).",
            ["result"],
            namespace=NAMESPACE,
            registry=reg,
        )
        if process:
            # process_resident_memory_bytes, process_open_fds, ...: what the soak test watches.
            ProcessCollector(registry=reg)
        reg.register(LiveCollector(self))

    # -- declared series --------------------------------------------------------------------

    def declare(self, cameras: Iterable[str], engines: Iterable[str]) -> None:
        """Create the labelled series at zero so rates and dashboards work before traffic."""
        for cam in cameras:
            with self._captured_lock:
                self._captured.setdefault(cam, 0)
            self._dropped.labels(cam)
            self._e2e.labels(cam)
        for eng in engines:
            self._inference.labels(eng)
            self._engine_failures.labels(eng)
            self._batch_size.labels(eng)
            self._batch_wait.labels(eng)
        for stage in STAGES:
            self._stage.labels(stage)

    # -- recording, called by the pipeline ---------------------------------------------------

    def observe(self, camera: str, timings: FrameTimings) -> None:
        """``FrameObserver``: record one processed frame's report from ``camera``'s pipeline."""
        self.frame_captured(camera)
        dropped = timings.dropped - self._dropped_seen.get(camera, 0)
        if dropped > 0:
            self.frames_dropped(camera, dropped)
            self._dropped_seen[camera] = timings.dropped
        self.stage_seconds("capture_wait", timings.capture_wait_ms / 1e3)
        self.stage_seconds("preprocess", timings.preprocess_ms / 1e3)
        for engine in timings.failed:
            self.engine_failed(engine)
        for engine, ms in timings.infer_ms.items():
            self.inference_seconds(engine, ms / 1e3)
        self.stage_seconds("infer", timings.infer_wall_ms / 1e3)
        self.stage_seconds("post", sum(timings.post_ms.values()) / 1e3)
        self.stage_seconds("emit", timings.emit_ms / 1e3)
        self.e2e_seconds(camera, timings.e2e_ms / 1e3)

    def watch_source(self, camera: str, stats: SourceCounts) -> None:
        """Read ``camera``'s captured frames from its source's ``stats`` when scraped.

        ``edgeyolo_frames_captured_total`` then counts what the camera delivered, so it equals
        processed (``edgeyolo_e2e_seconds_count``) + dropped, give or take the frames in
        flight at the moment of the scrape.
        """
        self._sources[camera] = stats

    def watch_engines(self, engines: Mapping[str, object]) -> None:
        """Read each engine's GPU decode overflow count when scraped (engines whose decode
        runs on the CPU have none and are left out)."""
        self._engines = dict(engines)

    def observe_batch(self, report: BatchReport) -> None:
        """``BatchObserver``: one engine call of a model, with each of its frames' wait."""
        self._batch_size.labels(report.model).observe(report.size)
        wait = self._batch_wait.labels(report.model)
        for ms in report.waited_ms:
            wait.observe(ms / 1e3)

    def frame_captured(self, camera: str, *, now: float | None = None) -> None:
        """A camera's frame reached its pipeline: marks the camera alive.

        Also counts it as captured, unless the camera's source is watched (``watch_source``).
        """
        if camera not in self._sources:
            with self._captured_lock:
                self._captured[camera] = self._captured.get(camera, 0) + 1
        self.last_frame[camera] = self._clock() if now is None else now

    def frames_dropped(self, camera: str, n: int = 1) -> None:
        """A camera's pipeline dropped ``n`` frames."""
        if n > 0:
            self._dropped.labels(camera).inc(n)

    def inference_seconds(self, engine: str, s: float, *, now: float | None = None) -> None:
        """One inference of ``engine`` completed in ``s`` seconds (marks the engine alive)."""
        self._inference.labels(engine).observe(s)
        self.last_inference[engine] = self._clock() if now is None else now

    def stage_seconds(self, stage: str, s: float) -> None:
        """One frame spent ``s`` seconds in ``stage`` (one of ``STAGES``)."""
        self._stage.labels(stage).observe(s)

    def e2e_seconds(self, camera: str, s: float) -> None:
        """One frame of ``camera`` took ``s`` seconds from capture to its events emitted."""
        self._e2e.labels(camera).observe(s)

    def config_reload(self, result: str, n: int = 1) -> None:
        """``n`` config reloads ended with ``result`` (accepted, rejected, failed)."""
        self._reloads.labels(result).inc(n)

    def engine_failed(self, engine: str) -> None:
        """An inference of ``engine`` raised."""
        self._engine_failures.labels(engine).inc()
        self._failures[engine] = self._failures.get(engine, 0) + 1

    def mqtt(
        self,
        connected: bool,
        reconnects: int,
        outbox: int,
        dropped: int,
        *,
        published: int | None = None,
        now: float | None = None,
    ) -> None:
        """The MQTT sink's current stats (its counters as totals since it started)."""
        self._mqtt = MqttStats(connected, reconnects, outbox, dropped, published)
        if connected:
            self._mqtt_down_since = None
        elif self._mqtt_down_since is None:
            self._mqtt_down_since = self._clock() if now is None else now

    def watch_mqtt(self, source: MqttSource) -> None:
        """Read the MQTT sink's stats from ``source`` whenever they are needed (a scrape,
        ``/healthz``) instead of waiting for ``mqtt`` reports; its ``down_since`` is on the
        clock of ``time.monotonic``."""
        self._mqtt_source = source

    def _read_mqtt(self) -> MqttStats | None:
        src = self._mqtt_source
        if src is not None:
            st = src.stats()
            self._mqtt = MqttStats(st.connected, st.reconnects, st.outbox, st.dropped, st.published)
            down = None if st.connected else src.down_since
            if down is None and not st.connected:
                down = self._mqtt_down_since if self._mqtt_down_since is not None else self._clock()
            self._mqtt_down_since = down
        return self._mqtt

    def mqtt_ok(self, now: float, max_down_s: float, outbox_limit: int) -> bool:
        """The MQTT part of ``/healthz``: connected, or buffering within bounds.

        Within bounds means disconnected for at most ``max_down_s`` seconds (a broker restart
        or a network blip) with room left in the outbox (``outbox_limit`` is its capacity).
        Before the sink's first report, the first ``max_down_s`` seconds count as connecting.
        """
        stats = self._read_mqtt()
        if stats is None:
            return now - self._created <= max_down_s
        if stats.connected:
            return True
        down = now - (self._mqtt_down_since if self._mqtt_down_since is not None else now)
        return down <= max_down_s and mqtt_within_bounds(
            connected=False, outbox=stats.outbox, outbox_limit=outbox_limit
        )

    def gpu_memory_bytes(self, used: int, total: int) -> None:
        """GPU memory in use and in all, in bytes, where the backend can tell."""
        self._gpu = (used, total)

    @property
    def mqtt_stats(self) -> MqttStats | None:
        """The last MQTT stats reported, or None while MQTT is off or has not reported."""
        return self._read_mqtt()

    # -- output ---------------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The registry in Prometheus text format (what ``/metrics`` serves)."""
        return generate_latest(self.registry)

    def health(
        self,
        now: float,
        max_age_s: float,
        expected_cameras: Iterable[str],
        expected_engines: Iterable[str],
        mqtt_ok: bool | None,
    ) -> tuple[bool, dict[str, Any]]:
        """Judge the service at monotonic time ``now`` (``metrics_live.judge_health``)."""
        return judge_health(self, now, max_age_s, expected_cameras, expected_engines, mqtt_ok)
