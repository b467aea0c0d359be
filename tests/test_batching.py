"""Several cameras, one engine call: real models, real video, the real service.

The dynamic-batch demo detector batches cameras' frames; each camera must get exactly what
the static batch-1 model gives it alone. Cameras that end or stall hold the others up for at
most ``batch_timeout_ms``; batch sizes follow ``max_batch``; a static model asking for a batch
is refused. Timings are only bounded where the bound is the promise (the timeout).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import DEMO_VIDEO, DET, MODELS, REPO, read_frame, shared_media
from edgeyolo.app import RunOptions, Service
from edgeyolo.batching import BatchTelemetry
from edgeyolo.config import ModelConfig, OnnxRuntimeConfig, load_config
from edgeyolo.engines.onnxruntime import OnnxRuntimeBackend
from edgeyolo.errors import ModelError
from edgeyolo.log import configure_logging
from edgeyolo.runner import ModelRunner

DET_DYN = MODELS / "edgeyolo-demo-det-dynbatch.onnx"
POSE_DYN = MODELS / "edgeyolo-demo-pose-dynbatch.onnx"


class Collect:
    """A sink that keeps detection events; ``on_event`` may act on each one."""

    def __init__(self, on_event=None) -> None:
        self.events: list = []
        self.on_event = on_event

    async def start(self) -> None: ...

    async def emit(self, event) -> None:
        if event.type == "detections":
            self.events.append(event)
            if self.on_event is not None:
                self.on_event(event)

    async def close(self) -> None: ...

    def by_camera(self, camera: str) -> dict[int, tuple]:
        return {e.seq: e.detections for e in self.events if e.camera == camera}


def write_config(tmp_path: Path, cameras: list[dict], model: dict, name: str) -> Path:
    data = {
        "backend": "onnxruntime",
        "onnxruntime": {"intra_op_threads": 1},
        "cameras": cameras,
        "models": [{"name": "det", "task": "detect", **model}],
        "logging": {"frame_sample": 0, "summary_interval_s": 1000},
        "sinks": {"jsonl": {"enabled": False}},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run(path: Path, max_frames: int | None, sink: Collect, service_hook=None) -> Service:
    options = RunOptions(
        max_frames=max_frames, pace="fast", handle_signals=False, keep_timings=True
    )
    options.extra_sinks.append(sink)
    service = Service(load_config(path), options)
    if service_hook is not None:
        service_hook(service)
    result = asyncio.run(service.run())
    assert result.exit_code == 0
    return service


@pytest.fixture(autouse=True)
def _quiet() -> None:
    configure_logging("json", "warning")


def test_batched_cameras_get_what_they_get_alone(tmp_path):
    """Three different sources in one batch; one (an image) ends after its first frame."""
    cameras = [
        {"name": "demo", "source": str(DEMO_VIDEO)},
        {"name": "vtest", "source": str(shared_media("vtest.avi"))},
        {"name": "bus", "source": str(shared_media("bus.jpg"))},
    ]
    frames = 5
    timeout_ms = 1000.0  # long: a batch that waits for the ended camera would show
    batched = Collect()
    path = write_config(
        tmp_path,
        cameras,
        {"path": str(DET_DYN), "max_batch": 3, "batch_timeout_ms": timeout_ms},
        "batched",
    )
    service = run(path, frames, batched)
    calls = service.batches["det"].all
    sizes = [c.size for c in calls]
    assert sizes[0] == 3  # every camera's first frame in one call
    assert max(sizes) <= 3
    # After the image ended, the two videos run in pairs without waiting for it.
    assert sizes[1:] == [2] * (frames - 1)
    assert max(w for c in calls[1:] for w in c.waited_ms) < timeout_ms / 2
    assert sum(sizes) == 2 * frames + 1
    for cam in cameras:
        alone = Collect()
        run(
            write_config(tmp_path, [cam], {"path": str(DET)}, f"alone-{cam['name']}"),
            frames,
            alone,
        )
        mine, ref = batched.by_camera(cam["name"]), alone.by_camera(cam["name"])
        assert sorted(mine) == sorted(ref) == list(range(1, len(ref) + 1))
        assert mine == ref, cam["name"]
    # Not vacuous: the demo video has objects on every frame.
    assert all(batched.by_camera("demo").values())


@pytest.mark.parametrize("max_batch", [2, 4])
def test_batch_sizes_follow_max_batch(tmp_path, max_batch):
    """Four cameras at full speed: every engine call takes exactly ``max_batch`` frames."""
    frames = 4
    cameras = [{"name": f"cam{i}", "source": str(DEMO_VIDEO)} for i in range(4)]
    path = write_config(
        tmp_path,
        cameras,
        {"path": str(DET_DYN), "max_batch": max_batch, "batch_timeout_ms": 1000},
        "four",
    )
    sink = Collect()
    service = run(path, frames, sink)
    sizes = Counter(c.size for c in service.batches["det"].all)
    assert sizes == {max_batch: 4 * frames // max_batch}
    metrics = service.metrics.exposition().decode()
    assert f'edgeyolo_batch_size_count{{engine="det"}} {4 * frames // max_batch}.0' in metrics
    assert f'edgeyolo_batch_size_sum{{engine="det"}} {4 * frames}.0' in metrics
    assert f'edgeyolo_batch_wait_seconds_count{{engine="det"}} {4 * frames}.0' in metrics
    # Same video on every camera: the same detections on every camera.
    first = sink.by_camera("cam0")
    assert len(first) == frames
    assert all(sink.by_camera(f"cam{i}") == first for i in range(1, 4))


def test_stalled_camera_holds_others_for_the_timeout_only(tmp_path):
    """A camera that delivers one frame and then nothing for seconds: the other goes on,
    each of its frames waiting for the stalled one no longer than ``batch_timeout_ms``."""
    timeout_ms = 150.0
    frames = 5
    cameras = [
        {"name": "fast", "source": str(DEMO_VIDEO), "pace": "fast"},
        # The file at 0.1 fps: a frame, then 10 s of nothing (the run is over by then).
        {"name": "stalled", "source": str(DEMO_VIDEO), "fps": 0.1, "pace": "native"},
    ]
    path = write_config(
        tmp_path,
        cameras,
        {"path": str(DET_DYN), "max_batch": 2, "batch_timeout_ms": timeout_ms},
        "stall",
    )
    box: dict[str, Service] = {}

    def stop_when_fast_is_done(event) -> None:
        if event.camera == "fast" and event.seq == frames:
            box["calls"] = list(box["service"].batches["det"].all)
            box["service"].stop("test: the fast camera is done")

    sink = Collect(stop_when_fast_is_done)
    # Per-camera pace: only the fast camera reads flat out.
    options = RunOptions(handle_signals=False, keep_timings=True, extra_sinks=[sink])
    service = box["service"] = Service(load_config(path), options)
    result = asyncio.run(service.run())
    assert result.exit_code == 0
    fast = sorted(sink.by_camera("fast"))  # frames already in flight at stop() finish too
    assert fast == list(range(1, len(fast) + 1))
    assert len(fast) >= frames
    # Its second frame was due only after 10 s; stop() may flush it out of the pacer.
    assert list(sink.by_camera("stalled"))[:1] == [1]
    assert len(sink.by_camera("stalled")) <= 2
    # Up to the fast camera's last frame: the first call or two may hold the stalled
    # camera's frame, the rest ran alone, each after waiting out the timeout.
    calls = box["calls"]
    for call in calls[-(frames - 2) :]:
        assert call.size == 1, calls
        (waited,) = call.waited_ms
        # Waited for the stalled camera (the timeout), and not much longer (a loaded box).
        assert timeout_ms * 0.9 <= waited < timeout_ms + 250, call


def _filled(backend, runner, image):
    slot = backend.allocate_input(runner.input_spec)
    return {runner.input_spec: slot}, {runner.input_spec: slot.fill(image)}


def test_failing_batch_fails_every_camera_and_cancelled_calls_leave_the_batch():
    """A failing engine call raises in each camera's call (each counted); a camera cancelled
    while waiting leaves the batch and one cancelled during the call does not break it."""
    backend = OnnxRuntimeBackend(OnnxRuntimeConfig(intra_op_threads=1), max_engines=2)
    images = [read_frame(DEMO_VIDEO, i) for i in (0, 100, 200)]
    try:
        batched = ModelRunner.open(
            backend, ModelConfig(name="b", path=DET_DYN, task="detect", max_batch=3)
        )
        calls_seen = BatchTelemetry("b", keep_all=True)
        batched.observers.append(calls_seen)
        alone = ModelRunner.open(backend, ModelConfig(name="a", path=DET, task="detect"))
        inputs = [_filled(backend, batched, img) for img in images]

        async def scenario() -> None:
            for _ in range(3):
                batched.attach()
            ref = [await alone.run(*x) for x in inputs]
            # 1. One camera gives up before the batch is full: the others still run together.
            calls = [asyncio.create_task(batched.run(*x)) for x in inputs]
            await asyncio.sleep(0)
            calls[1].cancel()
            done = await asyncio.gather(calls[0], calls[2])
            assert [d.detections.boxes.tolist() for d in done] == [
                ref[0].detections.boxes.tolist(),
                ref[2].detections.boxes.tolist(),
            ]
            assert batched.batcher is not None
            assert batched.batcher.waiting == 0
            # 2. One camera is cancelled while its batch runs: the other gets its result.
            calls = [asyncio.create_task(batched.run(*x)) for x in inputs]
            while not batched.lock.locked():  # noqa: ASYNC110 - polls the runner's own lock
                await asyncio.sleep(0.001)
            calls[0].cancel()
            rest = await asyncio.gather(calls[1], calls[2])
            assert rest[1].detections.boxes.tolist() == ref[2].detections.boxes.tolist()
            assert calls[0].cancelled()
            # 3. The engine call fails: every camera's call raises, each frame counted.
            engine = batched.engine

            async def lost(slots):
                raise RuntimeError("device lost")

            engine.infer_batch = lost  # the fault, at the engine boundary
            results = await asyncio.gather(
                *(batched.run(*x) for x in inputs), return_exceptions=True
            )
            assert [str(r) for r in results] == ["device lost"] * 3
            assert batched.failures == 3

        asyncio.run(scenario())
        assert [(c.size, c.failed) for c in calls_seen.all] == [(2, False), (3, False), (3, True)]
    finally:
        backend.close()


def test_static_model_refuses_a_batch(tmp_path):
    """max_batch: 4 on a static batch-1 export: a clear error naming model, file and shape."""
    backend = OnnxRuntimeBackend(OnnxRuntimeConfig(intra_op_threads=1), max_engines=1)
    try:
        with pytest.raises(ModelError) as err:
            ModelRunner.open(
                backend, ModelConfig(name="people", path=DET, task="detect", max_batch=4)
            )
    finally:
        backend.close()
    msg = str(err.value)
    assert msg.startswith(f"models[people].max_batch is 4, but {DET} has a static batch")
    assert "input 'images' is 1x3x640x640" in msg
    assert "set max_batch: 1" in msg
    # check-config says the same, naming the config entry.
    path = write_config(
        tmp_path,
        [{"name": "c", "source": str(DEMO_VIDEO)}],
        {"path": str(DET), "max_batch": 4},
        "static",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "edgeyolo", "check-config", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 1
    assert "models[0] = 'det': models[det].max_batch is 4" in proc.stderr
    assert "1x3x640x640" in proc.stderr


def test_dynamic_batch_models_run_alone_like_the_static_ones():
    """The shipped dynamic-batch exports at batch 1 give the static files' raw output."""
    backend = OnnxRuntimeBackend(OnnxRuntimeConfig(intra_op_threads=1), max_engines=2)
    image = read_frame(DEMO_VIDEO, 60)
    try:
        for static, dynamic, task in (
            (DET, DET_DYN, "detect"),
            (DET.parent / "edgeyolo-demo-pose.onnx", POSE_DYN, "pose"),
        ):
            a = backend.open_engine(ModelConfig(name="s", path=static, task=task))
            b = backend.open_engine(ModelConfig(name="d", path=dynamic, task=task, max_batch=2))
            assert a.info.input == b.info.input
            assert a.info.output == b.info.output
            assert (a.info.max_batch, b.info.max_batch) == (1, None)
            slot = backend.allocate_input(a.info.input)
            slot.fill(image)
            one = a.run_sync(slot.host)
            two = asyncio.run(b.infer_batch([slot, slot]))
            assert two.shape == (2, *one.shape[1:])
            np.testing.assert_array_equal(two[0], one[0])
            np.testing.assert_array_equal(two[1], one[0])
    finally:
        backend.close()


@pytest.mark.parametrize("threads", [1, 2])
def test_batches_give_each_frame_what_it_gets_alone(threads):
    """One or two intra-op threads (two: the batch runs frame-parallel, one lane per thread):
    each row of a batch, and a batch of one, is bit for bit the frame run alone."""
    backend = OnnxRuntimeBackend(OnnxRuntimeConfig(intra_op_threads=threads), max_engines=1)
    try:
        engine = backend.open_engine(
            ModelConfig(name="d", path=DET_DYN, task="detect", max_batch=3)
        )
        assert engine.lanes == threads
        slots = [backend.allocate_input(engine.info.input) for _ in range(3)]
        for slot, (video, index) in zip(
            slots, ((DEMO_VIDEO, 10), (DEMO_VIDEO, 60), (shared_media("vtest.avi"), 5)), strict=True
        ):
            slot.fill(read_frame(video, index))
        alone = [engine.run_sync(slot.host) for slot in slots]
        assert not np.array_equal(alone[0], alone[1])  # different frames
        for n in (3, 2):
            batch = asyncio.run(engine.infer_batch(slots[:n]))
            assert batch.shape == (n, *alone[0].shape[1:])
            for i in range(n):
                np.testing.assert_array_equal(batch[i], alone[i][0])
        one = asyncio.run(engine.infer_batch(slots[2:]))
        np.testing.assert_array_equal(one, alone[2])
    finally:
        backend.close()


def test_two_batched_models_share_the_frame_pool_and_get_their_own_outputs():
    """Two batched models at once on one backend: their frames share one pool of two threads,
    and each batch row is bit for bit that model's output for the frame alone."""
    backend = OnnxRuntimeBackend(OnnxRuntimeConfig(intra_op_threads=2), max_engines=2)
    try:
        det = backend.open_engine(ModelConfig(name="d", path=DET_DYN, task="detect", max_batch=2))
        pose = backend.open_engine(ModelConfig(name="p", path=POSE_DYN, task="pose", max_batch=2))
        assert det.lanes == pose.lanes == backend.batch_lanes == 2
        slots = [backend.allocate_input(det.info.input) for _ in range(2)]
        for slot, index in zip(slots, (10, 60), strict=True):
            slot.fill(read_frame(DEMO_VIDEO, index))

        async def both():
            return await asyncio.gather(det.infer_batch(slots), pose.infer_batch(slots))

        d, p = asyncio.run(both())
        for engine, out in ((det, d), (pose, p)):
            for i, slot in enumerate(slots):
                np.testing.assert_array_equal(out[i], engine.run_sync(slot.host)[0])
        assert d.shape[1] != p.shape[1]  # 84 vs 56 rows: each got its own model's output
    finally:
        backend.close()


@pytest.mark.parametrize(("threads", "max_batch", "per_frame"), [(2, 4, 1), (8, 4, 2), (8, 2, 4)])
def test_frame_parallel_frames_share_the_models_threads(threads, max_batch, per_frame):
    """A full batch's frames at once use the threads one frame gets at batch 1, no more."""
    backend = OnnxRuntimeBackend(OnnxRuntimeConfig(intra_op_threads=threads), max_engines=1)
    try:
        engine = backend.open_engine(
            ModelConfig(name="d", path=DET_DYN, task="detect", max_batch=max_batch)
        )
        options = engine._lane_session.get_session_options()
        assert options.intra_op_num_threads == per_frame
        assert engine._session.get_session_options().intra_op_num_threads == threads
    finally:
        backend.close()


def test_two_threads_batched_cameras_get_what_they_get_alone(tmp_path):
    """Frame-parallel batches (two intra-op threads) through the service: each camera gets
    exactly the detections it gets alone at batch 1."""
    cameras = [
        {"name": "demo", "source": str(DEMO_VIDEO)},
        {"name": "vtest", "source": str(shared_media("vtest.avi"))},
    ]
    frames = 4

    def config(cams: list[dict], model: dict, name: str) -> Path:
        path = write_config(tmp_path, cams, model, name)
        data = yaml.safe_load(path.read_text())
        data["onnxruntime"]["intra_op_threads"] = 2
        path.write_text(yaml.safe_dump(data))
        return path

    batched = Collect()
    service = run(config(cameras, {"path": str(DET_DYN), "max_batch": 2}, "lanes"), frames, batched)
    assert Counter(c.size for c in service.batches["det"].all)[2] >= frames - 1
    for cam in cameras:
        alone = Collect()
        run(config([cam], {"path": str(DET)}, f"alone2-{cam['name']}"), frames, alone)
        assert batched.by_camera(cam["name"]) == alone.by_camera(cam["name"]), cam["name"]
    assert all(batched.by_camera("demo").values())


def test_multicam_demo_config_checks_out():
    """config/multicam.yaml (the batching demo) passes check-config with its models opened."""
    path = REPO / "config" / "multicam.yaml"
    cfg = load_config(path)
    assert len(cfg.cameras) == 4
    assert [(m.path, m.max_batch) for m in cfg.models] == [(DET_DYN, 4)]
    proc = subprocess.run(
        [sys.executable, "-m", "edgeyolo", "check-config", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
