"""Metrics: the registry's text output parsed back, and the health judgement."""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgeyolo.metrics import STAGES, Metrics, mqtt_within_bounds


def samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, keyed by (name, sorted labels)."""
    out = {}
    for fam in text_string_to_metric_families(m.exposition().decode()):
        for s in fam.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


def test_counters_and_histograms_move() -> None:
    """Recorded frames, drops, latencies and failures appear in the parsed text output."""
    m = Metrics()
    m.declare(["cam0"], ["det"])
    before = samples(m)
    assert before["edgeyolo_frames_captured_total", (("camera", "cam0"),)] == 0
    for _ in range(3):
        m.frame_captured("cam0")
    m.frames_dropped("cam0", 2)
    m.frames_dropped("cam0", 0)
    m.inference_seconds("det", 0.004)
    m.inference_seconds("det", 0.25)
    m.stage_seconds("preprocess", 0.002)
    m.e2e_seconds("cam0", 0.05)
    m.engine_failed("det")
    after = samples(m)
    assert after["edgeyolo_frames_captured_total", (("camera", "cam0"),)] == 3
    assert after["edgeyolo_frames_dropped_total", (("camera", "cam0"),)] == 2
    assert after["edgeyolo_inference_seconds_count", (("engine", "det"),)] == 2
    assert after["edgeyolo_inference_seconds_sum", (("engine", "det"),)] == pytest.approx(0.254)
    assert after["edgeyolo_inference_seconds_bucket", (("engine", "det"), ("le", "0.005"))] == 1
    assert after["edgeyolo_stage_seconds_count", (("stage", "preprocess"),)] == 1
    assert after["edgeyolo_e2e_seconds_count", (("camera", "cam0"),)] == 1
    assert after["edgeyolo_engine_failures_total", (("engine", "det"),)] == 1
    assert after["edgeyolo_build_info", (("version", "0.1.0"),)] == 1


def test_declare_creates_every_stage_series() -> None:
    """declare() makes the stage, camera and engine series exist at zero."""
    m = Metrics()
    m.declare(["a", "b"], ["x"])
    s = samples(m)
    for stage in STAGES:
        assert s["edgeyolo_stage_seconds_count", (("stage", stage),)] == 0
    assert s["edgeyolo_e2e_seconds_count", (("camera", "b"),)] == 0


def test_mqtt_and_gpu_appear_once_reported() -> None:
    """MQTT and GPU series are absent until reported, then mirror the last report."""
    m = Metrics()
    names = {name for name, _ in samples(m)}
    assert not any(n.startswith(("edgeyolo_mqtt", "edgeyolo_gpu")) for n in names)
    m.mqtt(connected=True, reconnects=2, outbox=5, dropped=1)
    m.mqtt(connected=False, reconnects=3, outbox=7, dropped=4, published=42)
    m.gpu_memory_bytes(100, 1000)
    s = samples(m)
    assert s["edgeyolo_mqtt_connected", ()] == 0
    assert s["edgeyolo_mqtt_reconnects_total", ()] == 3
    assert s["edgeyolo_mqtt_outbox_messages", ()] == 7
    assert s["edgeyolo_mqtt_dropped_total", ()] == 4
    assert s["edgeyolo_mqtt_published_total", ()] == 42
    assert s["edgeyolo_gpu_memory_used_bytes", ()] == 100
    assert s["edgeyolo_gpu_memory_total_bytes", ()] == 1000


def test_process_and_age_gauges() -> None:
    """Process RSS/fds/threads come from /proc; ages follow the injected clock."""
    clock = [100.0]
    m = Metrics(clock=lambda: clock[0])
    m.frame_captured("cam0")
    m.inference_seconds("det", 0.01)
    clock[0] = 103.5
    s = samples(m)
    assert s["edgeyolo_last_frame_age_seconds", (("camera", "cam0"),)] == pytest.approx(3.5)
    assert s["edgeyolo_last_inference_age_seconds", (("engine", "det"),)] == pytest.approx(3.5)
    assert s["process_resident_memory_bytes", ()] > 10_000_000
    assert s["process_open_fds", ()] >= 3
    assert s["edgeyolo_process_threads", ()] >= 1
    without = {name for name, _ in samples(Metrics(process=False))}
    assert "process_resident_memory_bytes" not in without


def test_registries_are_independent() -> None:
    """Two Metrics objects never share counters (no global registry)."""
    a, b = Metrics(), Metrics()
    a.frame_captured("cam0")
    assert ("edgeyolo_frames_captured_total", (("camera", "cam0"),)) not in samples(b)


def test_health_names_what_is_unhealthy() -> None:
    """Stale or missing cameras and engines, and a failing MQTT, are each named."""
    m = Metrics()
    now = time.monotonic()
    m.frame_captured("cam0", now=now - 1)
    m.frame_captured("cam1", now=now - 30)
    m.inference_seconds("det", 0.01, now=now - 2)
    m.engine_failed("pose")
    ok, detail = m.health(now, 10, ["cam0", "cam1", "cam2"], ["det", "pose"], mqtt_ok=False)
    assert not ok
    assert detail["status"] == "unhealthy"
    assert detail["unhealthy"] == ["camera:cam1", "camera:cam2", "engine:pose", "mqtt"]
    assert detail["cameras"]["cam0"] == {"ok": True, "age_s": 1.0}
    assert "30.0 s" in detail["cameras"]["cam1"]["reason"]
    assert detail["cameras"]["cam2"]["reason"] == "no frame yet"
    assert detail["engines"]["pose"]["failures"] == 1
    assert detail["mqtt"]["ok"] is False


def test_health_ok_and_mqtt_off() -> None:
    """Fresh cameras and engines with MQTT off (None) or within bounds are healthy."""
    m = Metrics()
    now = time.monotonic()
    m.frame_captured("cam0", now=now)
    m.inference_seconds("det", 0.01, now=now)
    ok, detail = m.health(now + 9.9, 10, ["cam0"], ["det"], mqtt_ok=None)
    assert ok
    assert detail["unhealthy"] == []
    assert detail["mqtt"] is None
    m.mqtt(connected=False, reconnects=1, outbox=10, dropped=0)
    ok, detail = m.health(
        now,
        10,
        ["cam0"],
        ["det"],
        mqtt_within_bounds(connected=False, outbox=10, outbox_limit=1000),
    )
    assert ok
    assert detail["mqtt"]["outbox"] == 10
    assert not mqtt_within_bounds(connected=False, outbox=1000, outbox_limit=1000)
    assert mqtt_within_bounds(connected=True, outbox=1000, outbox_limit=1000)


def test_frame_captured_from_threads() -> None:
    """Capture threads may record concurrently without losing counts."""
    import threading

    m = Metrics(process=False)

    def work() -> None:
        for _ in range(1000):
            m.frame_captured("cam0")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert samples(m)["edgeyolo_frames_captured_total", (("camera", "cam0"),)] == 4000


def test_mqtt_ok_allows_a_short_outage_with_room_in_the_outbox() -> None:
    """Connected is ok; disconnected is ok for max_down_s with outbox room, then not."""
    clock = [0.0]
    m = Metrics(clock=lambda: clock[0], process=False)
    assert m.mqtt_ok(5.0, 10, 100)  # not reported yet: connecting, within the grace
    assert not m.mqtt_ok(11.0, 10, 100)
    m.mqtt(connected=True, reconnects=0, outbox=0, dropped=0, now=0.0)
    assert m.mqtt_ok(100.0, 10, 100)
    m.mqtt(connected=False, reconnects=0, outbox=5, dropped=0, now=100.0)
    m.mqtt(connected=False, reconnects=0, outbox=50, dropped=0, now=105.0)  # still down since 100
    assert m.mqtt_ok(109.0, 10, 100)
    assert not m.mqtt_ok(111.0, 10, 100)
    ok, detail = m.health(111.0, 10, [], [], m.mqtt_ok(111.0, 10, 100))
    assert not ok
    assert detail["mqtt"]["down_s"] == 11.0
    assert detail["mqtt"]["reason"] == "disconnected for 11.0 s with 50 message(s) in the outbox"
    m.mqtt(connected=False, reconnects=0, outbox=100, dropped=3, now=111.0)
    assert not m.mqtt_ok(102.0, 10, 100)  # outbox full: dropping, even within the time limit
    m.mqtt(connected=True, reconnects=1, outbox=0, dropped=3, now=112.0)
    ok, detail = m.health(112.0, 10, [], [], m.mqtt_ok(112.0, 10, 100))
    assert ok
    assert "down_s" not in detail["mqtt"]


def test_gpu_decode_overflows_are_read_from_the_engines_when_scraped() -> None:
    """Engines without a GPU decode (ONNX Runtime here, a real one) add no series; the
    counter's values come from the TensorRT engines' decoders (tests/test_gpu_kernels_run.py
    checks one that overflowed on the GPU machine)."""
    from conftest import DET
    from edgeyolo.config import ModelConfig, OnnxRuntimeConfig
    from edgeyolo.engines.onnxruntime import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(OnnxRuntimeConfig(intra_op_threads=1))
    engine = backend.open_engine(ModelConfig(name="d", path=DET, task="detect"))
    try:
        m = Metrics(process=False)
        m.watch_engines({"d": engine})
        text = m.exposition().decode()
        assert "# TYPE edgeyolo_gpu_decode_overflows_total counter" in text
        assert "edgeyolo_gpu_decode_overflows_total{" not in text
    finally:
        engine.close()
        backend.close()
