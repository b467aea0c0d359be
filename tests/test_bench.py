"""`edgeyolo bench` reports what it measured (numbers are for people, not assertions)."""

from __future__ import annotations

import json

import pytest

from helpers import DET, MODELS, REPO, run_cli

DET_INT8 = MODELS / "edgeyolo-demo-det-int8.onnx"

pytestmark = pytest.mark.slow


def bench(*args: str) -> dict:
    res = run_cli("bench", *args, timeout=600, cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    (line,) = res.stdout.splitlines()
    return json.loads(line)


def test_cpu_stages_report():
    r = bench("--cpu-stages", "--frames", "6")
    assert r["mode"] == "cpu-stages"
    assert r["frames"] == 6
    assert r["models"] == ["det-fp32", "det-int8", "pose-fp32", "pose-int8"]
    assert r["image"] == [960, 540]
    for key in ("preprocess_ms", "postprocess_ms", "seed_preprocess_ms", "seed_postprocess_ms"):
        assert r[key] > 0
    assert r["speedup_vs_seed"] == pytest.approx(r["seed_total_ms"] / r["total_ms"], rel=0.02)


@pytest.mark.parametrize("flag", [[], ["--sequential"]])
def test_pipeline_report(flag):
    r = bench("--frames", "6", "--warmup", "2", *flag)
    assert r["mode"] == ("sequential" if flag else "concurrent")
    assert r["frames"] == 6
    assert r["fps"] > 0
    stages = r["stages_ms"]
    for name in ("capture_wait", "preprocess", "e2e", "infer.det-fp32", "post.pose-int8"):
        assert stages[name]["median"] >= 0
        assert stages[name]["p95"] >= stages[name]["median"]


def test_waits_without_gpu_says_what_is_missing():
    from edgeyolo.engines.trt_runtime import cuda_problem

    if cuda_problem() is None:
        pytest.skip("a GPU is present: scripts/gpu-check measures the waits there")
    res = run_cli("bench", "--waits", timeout=120, cwd=REPO)
    assert res.returncode == 2
    assert "bench --waits needs an NVIDIA GPU: " in res.stderr


def test_drift_of_a_model_against_itself_is_none():
    """`bench drift` on FP32 vs the same file: every detection matched, IoU 1, no conf change."""
    res = run_cli(
        "bench", "drift", str(DET), str(DET), str(DET_INT8), "--step", "60", "--speed-runs", "2",
        "--rounds", "1", "--threads", "1",
        timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    same, int8 = (r for r in rows if r["kind"] == "drift")
    assert same["frames"] == int8["frames"] > 0
    assert same["fp32_detections"] == same["int8_detections"] == same["matched"] > 0
    assert same["precision"] == same["recall"] == 1.0
    assert same["mean_iou"] == 1.0
    assert same["mean_abs_conf_diff"] == 0.0
    assert 0 < int8["matched"] <= min(int8["fp32_detections"], int8["int8_detections"])
    speed = [r for r in rows if r["kind"] == "speed"]
    assert [r["model"] for r in speed] == [DET.name, DET.name, DET_INT8.name]
    assert all(r["median_ms"] > 0 for r in speed)


def test_mqtt_bench_reports_rates_and_latency():
    """`bench mqtt` on the demo with the embedded broker: per-topic rates and latencies."""
    res = run_cli(
        "bench", "mqtt", "--broker", "embedded", "--seconds", "4", "--warmup", "2", timeout=300
    )
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads(res.stdout)
    rates = report["messages_per_s"]
    assert {t for t in rates if t.endswith("/detections")}, rates
    assert all(v > 0 for v in rates.values())
    lat = report["capture_to_subscriber_ms"]
    assert lat["n"] > 0
    assert 0 < lat["median"] <= lat["p99"]


def test_tracking_bench_times_both_variants():
    """`bench tracking`: every walker detected every frame, both variants timed, events come."""
    r = bench("tracking", "--objects", "5", "--frames", "60", "--warmup", "10")
    assert r["detections_per_frame"] == 5.0
    for variant in ("tracker", "tracker_zones_lines_lifecycle"):
        t = r[variant]
        assert 0 < t["min_us"] <= t["median_us"] <= t["p95_us"]
    assert r["events"] > 0


def test_view_bench_viewer_gets_pictures():
    """`bench view`: draw timings for the frames asked, and the one viewer received pictures."""
    res = run_cli(
        "bench", "view", "--frames", "6", "--warmup", "1", "--rounds", "1", "--draw-frames", "2",
        timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    r = json.loads(res.stdout)
    assert r["draw"]["frames"] == 2
    assert r["draw"]["picture_ms"]["median"] > 0
    assert set(r["service"]) == {"http-off", "http-on-no-viewer", "one-viewer"}
    assert r["service"]["one-viewer"]["viewer_parts_per_round"][0] > 0


def test_batching_report_runs_both_paths():
    """`bench --cameras 2`: the same two cameras at batch 1 and batched, side by side."""
    r = bench("-c", str(REPO / "config" / "multicam.yaml"), "--cameras", "2", "--frames", "4")
    assert r["mode"] == "batching"
    assert (r["backend_requested"], r["backend"]) == ("auto", "onnxruntime")  # no GPU here
    assert r["pace"] == "fast"
    assert r["batched_models"] == ["det"]
    assert r["not_batched"] == []
    one, many = r["batch1"], r["batched"]
    assert set(one["models"]["det"]["batch_sizes"]) == {"1"}
    assert set(many["models"]["det"]["batch_sizes"]) <= {"1", "2"}
    assert "2" in many["models"]["det"]["batch_sizes"]
    for run in (one, many):
        assert run["camera_frames_per_s"] > 0
        assert set(run["e2e_ms_p99"]) == {"cam-a-0", "cam-a-1"}
    assert r["throughput_ratio"] == pytest.approx(
        many["camera_frames_per_s"] / one["camera_frames_per_s"], abs=0.01
    )


def test_paced_batching_reads_cameras_at_the_files_rate():
    """`bench --cameras 2 --paced`: the cameras deliver at the video's 15 fps, as live cameras
    do (the latency figure), so the two of them can never exceed 30 camera-frames/s."""
    r = bench(
        "-c", str(REPO / "config" / "multicam.yaml"), "--cameras", "2", "--frames", "6",
        "--warmup", "2", "--paced",
    )  # fmt: skip
    assert r["pace"] == "native"
    for run in (r["batch1"], r["batched"]):
        assert 0 < run["camera_frames_per_s"] <= 2 * 15 * 1.2, run
        assert set(run["e2e_ms_p99"]) == {"cam-a-0", "cam-a-1"}


def test_host_decode_report():
    """`bench --host-decode`: per model candidate counts and microseconds, all models per frame."""
    r = bench("--host-decode", "--frames", "3")
    assert r["mode"] == "host-decode"
    assert r["images"] == 3 + len(r["extra_images"])
    assert list(r["models"]) == ["det-fp32", "det-int8", "pose-fp32", "pose-int8"]
    for m in r["models"].values():
        assert m["candidates"]["max"] > 0
        assert m["kept_median"] > 0
        for key in ("to_candidates_us", "decode_us"):
            assert 0 < m[key]["best"] <= m[key]["p95"]
            assert m[key]["cpu"] > 0
    assert r["all_models_per_frame_us"]["median"] > 0


def test_batching_rounds_alternate_and_report_the_median():
    """`bench --cameras 2 --rounds 3`: three pairs, alternating which runs first; the top-level
    runs are the median round's, with CPU per camera-frame and the load average."""
    r = bench(
        "-c", str(REPO / "config" / "multicam.yaml"), "--cameras", "2", "--frames", "4",
        "--warmup", "2", "--rounds", "3",
    )  # fmt: skip
    rounds = r["rounds"]
    assert [x["first"] for x in rounds] == ["batch1", "batched", "batch1"]
    ratios = sorted(x["throughput_ratio"] for x in rounds)
    assert r["throughput_ratio"] == ratios[1]
    one, many = r["batch1"], r["batched"]
    assert r["throughput_ratio"] == pytest.approx(
        many["camera_frames_per_s"] / one["camera_frames_per_s"], abs=0.01
    )
    for x in rounds:
        assert x["cpu_ratio"] == pytest.approx(
            x["batched_cpu_ms_per_camera_frame"] / x["batch1_cpu_ms_per_camera_frame"], abs=0.01
        )
    for run in (one, many):
        assert run["cpu_ms_per_camera_frame"] > 0
        assert run["load_avg_1m"] >= 0
        det = run["models"]["det"]
        assert det["infer_ms_per_frame"] > 0
    assert "2" in many["models"]["det"]["batch_sizes"]
