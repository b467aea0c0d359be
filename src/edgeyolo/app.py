"""Composition root: builds every resource from the config, runs the cameras, shuts down.

Resources are created here and passed in (no globals) and released in reverse order:
sinks are started before the first frame and closed after the last (so a final state and
"offline" go out), engines and the backend are closed last.

About 440 lines, over the house's ~400 on purpose: this is the one place where every
resource's lifetime is visible in order (backend, runners, sinks, pipelines, sources, the HTTP
server, signals, systemd); what can stand alone lives elsewhere (``sinks/setup.py``,
``reload.py``, ``signals.py``, ``pipeline.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from edgeyolo.annotate import camera_shapes
from edgeyolo.batching import BatchTelemetry
from edgeyolo.engines.select import create_backend
from edgeyolo.errors import EdgeYoloError
from edgeyolo.http import HttpServer
from edgeyolo.http.status import build_status
from edgeyolo.live import LiveView
from edgeyolo.metrics import Metrics
from edgeyolo.pipeline import CameraPipeline
from edgeyolo.reload import Reloader
from edgeyolo.runner import ModelRunner, open_runners
from edgeyolo.sdnotify import SystemdNotifier, run_watchdog, watchdog_period
from edgeyolo.signals import SignalRelay
from edgeyolo.sinks.setup import build_sinks, mqtt_sink
from edgeyolo.snapshots import SnapshotStage
from edgeyolo.sources import CaptureSource
from edgeyolo.stages import build_stages
from edgeyolo.tasks import TaskGroup
from edgeyolo.telemetry import CameraTelemetry

if TYPE_CHECKING:
    from collections.abc import Callable

    from edgeyolo.config import CameraConfig, Config
    from edgeyolo.engines.base import Backend
    from edgeyolo.events import StatsEvent
    from edgeyolo.sinks.base import Sink
    from edgeyolo.sinks.mqtt import MqttSink
    from edgeyolo.stages import Stage

_log = structlog.get_logger("edgeyolo.app")


@dataclass
class RunOptions:
    """Command-line choices that are not part of the config file."""

    max_frames: int | None = None
    loop: bool | None = None
    pace: str | None = None
    sequential: bool = False
    keep_timings: bool = False
    handle_signals: bool = True
    extra_sinks: list[Any] = field(default_factory=list)
    jsonl: bool = True
    # The file SIGHUP re-reads; None: SIGHUP is not handled.
    config_path: Path | None = None
    # Command-line overrides, applied again to a reloaded config.
    overrides: Callable[[Config], Config] | None = None
    # Creates the backend from the config; None: ``create_backend`` (what the config asks).
    backend: Callable[[Config], Backend] | None = None
    # Catches SIGINT/SIGTERM/SIGHUP for the whole run (the CLI installs it first thing);
    # None with handle_signals: ``run`` installs one.
    signals: SignalRelay | None = None
    # Config reloads by result (accepted, rejected, failed), carried across restarts.
    reloads: dict[str, int] = field(default_factory=dict)


@dataclass
class RunResult:
    """What a finished run reports (used by ``bench`` and tests)."""

    exit_code: int
    frames: dict[str, int]
    dropped: dict[str, int]
    wall_s: float
    telemetry: dict[str, CameraTelemetry]
    # Set when SIGHUP brought a valid new config: the caller runs again with it.
    reload: Config | None = None
    # Per model: its engine calls (batch sizes, waits); every call kept with keep_timings.
    batches: dict[str, BatchTelemetry] = field(default_factory=dict)


class Service:
    """One run of the service: resources are acquired in ``run`` and released in reverse."""

    def __init__(self, config: Config, options: RunOptions) -> None:
        self.config = config
        self.options = options
        self.metrics = Metrics()
        for result, n in options.reloads.items():
            self.metrics.config_reload(result, n)
        self.notifier = SystemdNotifier.from_env(unset_environment=True)
        self.runners: list[ModelRunner] = []
        self.batches: dict[str, BatchTelemetry] = {}
        self.sinks: list[Sink] = []
        self.mqtt: MqttSink | None = None
        self.sources: list[CaptureSource] = []
        self.pipelines: list[CameraPipeline] = []
        self.http_port: int | None = None
        self.live: LiveView | None = None
        self._started = time.monotonic()
        self.reload: Config | None = None
        self._stop = asyncio.Event()
        self._stopped_at: float | None = None
        self._lost_stdout = False  # exit 1 then, as before: a unit with Restart=on-failure restarts
        self._reloader = Reloader(
            options.config_path,
            options.overrides,
            config,
            self._restart_with,
            self._count_reload,
        )

    # -- control ---------------------------------------------------------------------------
    def stop(self, reason: str = "requested") -> None:
        """Stop the sources; in-flight frames finish (within ``pipeline.stop_timeout_s``)."""
        if self._stop.is_set():
            return
        _log.info("stopping", reason=reason, timeout_s=self.config.pipeline.stop_timeout_s)
        self._stopped_at = time.monotonic()
        self.notifier.stopping(f"stopping: {reason}")
        self._stop.set()
        for s in self.sources:
            s.stop()

    def _on_stdout_closed(self) -> None:
        self._lost_stdout = True
        self.stop("stdout closed")

    def _on_signal(self, sig: signal.Signals) -> None:
        """A signal, in the loop (also one that came while the service was starting)."""
        if sig != signal.SIGHUP:
            self.stop(sig.name)
        else:
            self._reloader.request()

    def _count_reload(self, result: str) -> None:
        self.metrics.config_reload(result)
        self.options.reloads[result] = self.options.reloads.get(result, 0) + 1

    def _restart_with(self, new: Config) -> None:
        self.notifier.reloading()
        self.reload = new
        self.stop("SIGHUP")

    # -- health ----------------------------------------------------------------------------
    def health(self) -> tuple[bool, dict[str, Any]]:
        """``/healthz``: every camera and engine recent, MQTT connected or buffering in bounds."""
        now = time.monotonic()
        max_age = self.config.http.max_age_s
        mqtt = self.config.sinks.mqtt
        mqtt_ok = None if mqtt is None else self.metrics.mqtt_ok(now, max_age, mqtt.outbox.size)
        return self.metrics.health(
            now,
            max_age,
            [p.camera for p in self.pipelines],
            [r.name for r in self.runners],
            mqtt_ok,
        )

    # -- run -------------------------------------------------------------------------------
    async def run(self) -> RunResult:
        """Run every camera until their sources end or ``stop`` is called."""
        relay = self.options.signals if self.options.handle_signals else None
        own = None
        if self.options.handle_signals and relay is None:
            relay = own = SignalRelay()  # run_service called directly: this run only
            own.install()
        if relay is not None:
            relay.attach(asyncio.get_running_loop(), self._on_signal)
        try:
            return await self._run()
        finally:
            await self._reloader.close()
            if relay is not None:
                relay.detach()
            if own is not None:
                own.restore()

    async def _run(self) -> RunResult:
        started = time.perf_counter()
        exit_code = 0
        backend = (self.options.backend or create_backend)(self.config)
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(backend.close)
            if backend.name == "tensorrt":
                # Engines built from .onnx on first start take minutes on a Jetson: tell
                # systemd before its start timeout runs out.
                self.notifier.extend_timeout(1800)
                self.notifier.status("loading or building TensorRT engines")
            self.runners = open_runners(backend, self.config.models)
            for r in self.runners:
                stack.callback(r.close)
            self._observe_batches()
            self.mqtt = mqtt_sink(self.config, self.runners)
            if self.mqtt is not None:
                self.metrics.watch_mqtt(self.mqtt)
            self.sinks = build_sinks(
                self.config,
                self.mqtt,
                jsonl=self.options.jsonl,
                extra=self.options.extra_sinks,
                on_stdout_closed=self._on_stdout_closed,
            )
            for sink in self.sinks:
                await sink.start()
                stack.push_async_callback(self._close_sink, sink)
            stack.push_async_callback(self._final_summaries)
            http = self.config.http
            if http.enabled:
                # Closed after the server (the stack unwinds in reverse): streams end first.
                self.live = LiveView(max_fps=http.stream_fps, quality=http.jpeg_quality)
                stack.push_async_callback(self.live.close)
            self._open_pipelines(backend)
            for p in self.pipelines:
                stack.callback(p.close)
            for src in self.sources:
                stack.push_async_callback(self._close_source, src)
            self.metrics.declare([p.camera for p in self.pipelines], [r.name for r in self.runners])
            for p in self.pipelines:
                self.metrics.watch_source(p.camera, p.source.stats)
            self.metrics.watch_engines({r.name: r.engine for r in self.runners})
            if http.enabled:
                server = HttpServer(
                    http.host,
                    http.port,
                    self.metrics,
                    self.health,
                    status_fn=self.status,
                    live=self.live,
                    token=http.token,
                    allow_anonymous=http.allow_anonymous,
                    stall_timeout_s=http.stall_timeout_s,
                )
                await stack.enter_async_context(server)
                self.http_port = server.port
                base = f"http://{http.host}:{server.port}"
                _log.info(
                    "http endpoint",
                    page=f"{base}/",
                    healthz=f"{base}/healthz",
                    metrics=f"{base}/metrics",
                )
            stack.callback(self.notifier.close)
            # Background tasks end (cancelled) first when the stack unwinds.
            background = await stack.enter_async_context(TaskGroup())
            period = watchdog_period()
            if period is not None:
                background.start(run_watchdog(self.notifier, period, lambda: True), name="watchdog")
            try:
                _log.info(
                    "running",
                    cameras=[p.camera for p in self.pipelines],
                    models=[r.name for r in self.runners],
                    backend=backend.name,
                )
                self.notifier.ready(f"running {len(self.pipelines)} camera(s)")
                exit_code = max(await self._run_pipelines(), int(self._lost_stdout))
            finally:
                if not self._stop.is_set():  # sources ended by themselves
                    self.notifier.stopping("sources ended")
        frames = {p.camera: p.frames_done for p in self.pipelines}
        dropped = {p.camera: p.source.stats.dropped for p in self.pipelines}
        _log.info("stopped", frames=frames, dropped=dropped, exit_code=exit_code)
        return RunResult(
            exit_code,
            frames,
            dropped,
            time.perf_counter() - started,
            {p.camera: p.telemetry for p in self.pipelines},
            self.reload,
            self.batches,
        )

    def _observe_batches(self) -> None:
        """Every model's engine calls go to its batch summary and to Prometheus."""
        for r in self.runners:
            tel = BatchTelemetry(
                r.name,
                summary_interval_s=self.config.logging.summary_interval_s,
                keep_all=self.options.keep_timings,
            )
            self.batches[r.name] = tel
            r.observers += [tel, self.metrics]

    def _open_pipelines(self, backend: Backend) -> None:
        for cam in self.config.cameras:
            update: dict[str, Any] = (
                {} if self.options.pace is None else {"pace": self.options.pace}
            )
            src = CaptureSource(cam.model_copy(update=update), loop_file=self.options.loop)
            names = {m.name for m in self.config.models_for(cam.name)}
            runners = [r for r in self.runners if r.name in names]
            if not runners:
                _log.warning("camera has no models; it is not run", camera=cam.name)
                continue
            tel = CameraTelemetry(
                cam.name,
                structlog.get_logger("edgeyolo.telemetry").bind(camera=cam.name),
                frame_sample=self.config.logging.frame_sample,
                summary_interval_s=self.config.logging.summary_interval_s,
            )
            tel.keep_all = self.options.keep_timings
            pipeline = CameraPipeline(
                src,
                runners,
                backend,
                self.sinks,
                tel,
                stages=[*build_stages(cam, self.config), *self._view_stages(cam)],
                observers=[self.metrics],
                max_frames=self.options.max_frames,
                sequential=self.options.sequential,
            )
            pipeline.on_summary = self._on_summary
            self.sources.append(src)
            self.pipelines.append(pipeline)

    def _view_stages(self, camera: CameraConfig) -> list[Stage]:
        """Last in a camera's stages (they see track ids): snapshots, the live view's tap."""
        stages: list[Stage] = []
        mqtt = self.config.sinks.mqtt
        if self.mqtt is not None and mqtt is not None and mqtt.snapshots.enabled:
            stages.append(SnapshotStage(camera.name, mqtt.snapshots, self.mqtt.publish_snapshot))
        if self.live is not None:
            stages.append(self.live.tap(camera.name, camera_shapes(camera)))
        return stages

    def status(self) -> dict[str, Any]:
        """``/api/status``: cameras, models, health and MQTT (edgeyolo.http.status)."""
        tasks = {r.name: str(r.config.task) for r in self.runners}
        return build_status(
            self.health, self.pipelines, self.live, started=self._started, tasks=tasks
        )

    def _on_summary(self, stats: StatsEvent) -> None:
        self.notifier.status(f"{stats.camera}: {stats.fps:.1f} fps, {stats.dropped} dropped")

    async def _run_camera(self, pipeline: CameraPipeline) -> bool:
        """Run one camera; a failure is logged and reported, never raised at the others."""
        try:
            await pipeline.run()
        except Exception as exc:
            _log.error("camera failed", camera=pipeline.camera, error=str(exc))
            return False
        return True

    async def _run_pipelines(self) -> int:
        """Run every camera until all ended, or until ``stop`` plus the stop timeout."""
        if self._stop.is_set():  # a SIGTERM during start-up
            return 0
        for src in self.sources:
            await src.start()
        exit_code = 0
        async with TaskGroup() as tg:
            cameras = [
                tg.start(self._run_camera(p), name=f"camera-{p.camera}") for p in self.pipelines
            ]
            stop = tg.start(self._stop.wait(), name="stop-requested")
            running: set[asyncio.Task[Any]] = set(cameras)
            while running and not stop.done():
                _, running = await asyncio.wait(
                    running | {stop}, return_when=asyncio.FIRST_COMPLETED
                )
                running.discard(stop)
            if running:
                # Stopping: the sources are stopped; let the frames in flight finish.
                _, still = await asyncio.wait(running, timeout=self.config.pipeline.stop_timeout_s)
                if still:
                    _log.error(
                        "in-flight frames did not finish in time; cancelling",
                        cameras=[t.get_name() for t in still],
                    )
                    exit_code = 1
            # Leaving the block cancels whatever still runs (and the stop waiter) and awaits it.
        if not all(t.result() for t in cameras if not t.cancelled()):
            exit_code = 1
        return exit_code

    async def _final_summaries(self) -> None:
        for tel in self.batches.values():
            tel.summary()
        for p in self.pipelines:
            stats = p.telemetry.summary(p.source.stats.dropped)
            for sink in self.sinks:
                with contextlib.suppress(Exception):
                    await sink.emit(stats)

    async def _close_source(self, source: CaptureSource) -> None:
        # A capture thread stuck in a native call (OpenCV opening a network camera) is left
        # behind (a daemon thread) once the stop timeout, counted from the stop, is used up.
        spent = time.monotonic() - (self._stopped_at or time.monotonic())
        await source.close(timeout=max(0.1, self.config.pipeline.stop_timeout_s - spent))

    async def _close_sink(self, sink: Sink) -> None:
        try:
            await asyncio.wait_for(sink.close(), timeout=self.config.pipeline.stop_timeout_s)
        except Exception as exc:
            _log.error("sink did not close cleanly", sink=type(sink).__name__, error=str(exc))


async def run_service(config: Config, options: RunOptions | None = None) -> RunResult:
    """Run the service once (until sources end, a signal, or a SIGHUP reload)."""
    return await Service(config, options or RunOptions()).run()


def run(config: Config, options: RunOptions | None = None) -> RunResult:
    """Blocking entry point for the CLI; a SIGHUP with a valid config restarts with it.

    When the new config fails to start after all (a TensorRT engine that does not build),
    the service goes back to the config it ran before, logs why and counts it.
    """
    options = options or RunOptions()
    own: SignalRelay | None = None
    if options.handle_signals and options.signals is None:
        own = options.signals = SignalRelay()
        own.install()
    previous: Config | None = None
    try:
        while True:
            try:
                result = asyncio.run(run_service(config, options))
            except EdgeYoloError as exc:
                if previous is None:
                    raise
                options.reloads["failed"] = options.reloads.get("failed", 0) + 1
                _log.error(
                    "reloaded config failed to start; going back to the previous config",
                    error=str(exc),
                )
                config, previous = previous, None
                continue
            if result.reload is None:
                return result
            previous, config = config, result.reload
    finally:
        if own is not None:
            own.restore()
            options.signals = None
