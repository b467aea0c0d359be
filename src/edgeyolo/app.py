"""Composition root: builds every resource from the config, runs the cameras, shuts down.

Resources are created here and passed in (no globals) and released in reverse order:
sinks are started before the first frame and closed after the last (so a final state and
"offline" go out), engines and the backend are closed last.
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

from edgeyolo.config import load_config
from edgeyolo.engines.model import check_model
from edgeyolo.engines.select import create_backend
from edgeyolo.errors import ConfigError
from edgeyolo.pipeline import CameraPipeline, ModelRunner
from edgeyolo.postprocess import Thresholds
from edgeyolo.sinks.jsonl import JsonlSink
from edgeyolo.sources import CaptureSource
from edgeyolo.telemetry import CameraTelemetry

if TYPE_CHECKING:
    from edgeyolo.config import Config
    from edgeyolo.engines.base import Backend
    from edgeyolo.sinks.base import Sink

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


def open_runners(config: Config, backend: Backend) -> list[ModelRunner]:
    """Load every model once and check it against its config entry."""
    runners: list[ModelRunner] = []
    try:
        for m in config.models:
            t = time.perf_counter()
            engine = backend.open_engine(m)
            try:
                labels, class_ids = check_model(m, engine.info)
            except Exception:
                engine.close()
                raise
            runners.append(
                ModelRunner(m, engine, labels, Thresholds(m.conf, m.iou, m.max_det, class_ids))
            )
            _log.info(
                "model loaded",
                model=m.name,
                path=str(m.path),
                task=engine.info.task,
                classes=engine.info.num_classes,
                input=list(engine.info.input.shape),
                load_ms=round((time.perf_counter() - t) * 1e3, 1),
            )
    except Exception:
        for r in reversed(runners):
            r.engine.close()
        raise
    return runners


def build_sinks(config: Config, runners: list[ModelRunner], options: RunOptions) -> list[Sink]:
    """The configured sinks (JSON lines, MQTT) plus any the caller added."""
    sinks: list[Sink] = []
    if options.jsonl and config.sinks.jsonl.enabled:
        sinks.append(JsonlSink(config.sinks.jsonl.path))
    if config.sinks.mqtt is not None:
        from edgeyolo.sinks.mqtt import MqttSink  # noqa: PLC0415 - only importer of aiomqtt

        topology: list[tuple[str, str, str, list[str]]] = [
            (cam.name, r.name, str(r.config.task), _reported_labels(r))
            for cam in config.cameras
            for r in runners
            if r.config.cameras is None or cam.name in r.config.cameras
        ]
        sinks.append(MqttSink(config.sinks.mqtt, topology))
    sinks.extend(options.extra_sinks)
    return sinks


def _reported_labels(runner: ModelRunner) -> list[str]:
    ids = runner.thresholds.classes
    if ids is None:
        return list(runner.labels)
    return [runner.labels[int(i)] for i in ids]


async def run_service(config: Config, options: RunOptions | None = None) -> RunResult:
    """Run every camera until their sources end or a signal asks to stop."""
    options = options or RunOptions()
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    backend = create_backend(config)
    runners: list[ModelRunner] = []
    sinks: list[Sink] = []
    started_sinks: list[Sink] = []
    pipelines: list[CameraPipeline] = []
    sources: list[CaptureSource] = []
    stop_requested = asyncio.Event()
    reload: Config | None = None
    exit_code = 0
    installed_signals: list[signal.Signals] = []
    try:
        runners = open_runners(config, backend)
        sinks = build_sinks(config, runners, options)
        for sink in sinks:
            await sink.start()
            started_sinks.append(sink)
        for cam in config.cameras:
            cam_cfg = cam if options.pace is None else cam.model_copy(update={"pace": options.pace})
            src = CaptureSource(cam_cfg, loop_file=options.loop)
            await src.start()
            sources.append(src)
            cam_runners = [
                r for r in runners if r.config.cameras is None or cam.name in r.config.cameras
            ]
            if not cam_runners:
                _log.warning("camera has no models; it is not run", camera=cam.name)
                continue
            tel = CameraTelemetry(
                cam.name,
                structlog.get_logger("edgeyolo.telemetry").bind(camera=cam.name),
                frame_sample=config.logging.frame_sample,
                summary_interval_s=config.logging.summary_interval_s,
            )
            tel.keep_all = options.keep_timings
            pipelines.append(
                CameraPipeline(
                    src,
                    cam_runners,
                    backend,
                    sinks,
                    tel,
                    max_frames=options.max_frames,
                    sequential=options.sequential,
                )
            )

        def request_stop(signame: str) -> None:
            if stop_requested.is_set():
                return
            _log.info("stopping", signal=signame, timeout_s=config.pipeline.stop_timeout_s)
            stop_requested.set()
            for s in sources:
                s.stop()

        def request_reload() -> None:
            nonlocal reload
            assert options.config_path is not None
            try:
                new = load_config(options.config_path)
            except ConfigError as exc:
                _log.error(
                    "config reload rejected; keeping the running config",
                    path=str(options.config_path),
                    error=str(exc),
                )
                return
            _log.info("config reload accepted; restarting", path=str(options.config_path))
            reload = new
            request_stop("SIGHUP")

        if options.handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, request_stop, sig.name)
                    installed_signals.append(sig)
            if options.config_path is not None:
                loop.add_signal_handler(signal.SIGHUP, request_reload)
                installed_signals.append(signal.SIGHUP)

        _log.info(
            "running", cameras=[p.camera for p in pipelines], models=[r.name for r in runners]
        )
        tasks = [asyncio.create_task(p.run(), name=f"camera-{p.camera}") for p in pipelines]
        stopper: asyncio.Task[Any] = asyncio.create_task(stop_requested.wait())
        pending: set[asyncio.Task[Any]] = set(tasks)
        while pending:
            done, pending = await asyncio.wait(
                pending | {stopper}, return_when=asyncio.FIRST_COMPLETED
            )
            pending.discard(stopper)
            for t in done:
                if t is not stopper and t.exception() is not None:
                    exc = t.exception()
                    _log.error("camera failed", camera=t.get_name(), error=str(exc))
                    exit_code = 1
            if stopper in done:
                # Sources are stopped: in-flight frames finish, within the time limit.
                _, still = await asyncio.wait(pending, timeout=config.pipeline.stop_timeout_s)
                if still:
                    _log.error(
                        "in-flight frames did not finish in time; cancelling",
                        cameras=[t.get_name() for t in still],
                    )
                    for t in still:
                        t.cancel()
                    await asyncio.gather(*still, return_exceptions=True)
                    exit_code = 1
                pending = set()
        stopper.cancel()
    finally:
        for sig in installed_signals:
            loop.remove_signal_handler(sig)
        for src in reversed(sources):
            await src.close()
        for p in reversed(pipelines):
            for s in started_sinks:
                with contextlib.suppress(Exception):
                    await s.emit(p.telemetry.summary(p.source.stats.dropped))
        for sink in reversed(started_sinks):
            try:
                await asyncio.wait_for(sink.close(), timeout=config.pipeline.stop_timeout_s)
            except Exception as exc:
                _log.error("sink did not close cleanly", sink=type(sink).__name__, error=str(exc))
        for p in reversed(pipelines):
            p.close()
        for r in reversed(runners):
            r.engine.close()
        backend.close()
    frames = {p.camera: p.frames_done for p in pipelines}
    dropped = {p.camera: p.source.stats.dropped for p in pipelines}
    _log.info("stopped", frames=frames, dropped=dropped, exit_code=exit_code)
    return RunResult(
        exit_code,
        frames,
        dropped,
        time.perf_counter() - started,
        {p.camera: p.telemetry for p in pipelines},
        reload,
    )


def run(config: Config, options: RunOptions | None = None) -> RunResult:
    """Blocking entry point for the CLI; a SIGHUP with a valid config restarts with it."""
    while True:
        result = asyncio.run(run_service(config, options))
        if result.reload is None:
            return result
        config = result.reload
