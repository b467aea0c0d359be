"""`edgeyolo bench` reports what it measured (numbers are for people, not assertions)."""

from __future__ import annotations

import json

import pytest

from conftest import REPO
from helpers import run_cli

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
