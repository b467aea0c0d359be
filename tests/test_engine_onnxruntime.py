"""The ONNX Runtime backend on the real demo models."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from conftest import DET, POSE
from edgeyolo.config import ModelConfig, OnnxRuntimeConfig
from edgeyolo.engines.onnxruntime import OnnxRuntimeBackend, inspect_model
from edgeyolo.errors import ModelError


def test_reads_ultralytics_metadata():
    det, pose = inspect_model(DET), inspect_model(POSE)
    assert det.task == "detect"
    assert det.num_classes == 80
    assert det.names[0] == "person"
    assert det.names[32] == "sports ball"
    assert det.input.shape == (1, 3, 640, 640)
    assert det.output.shape == (1, 84, 8400)
    assert pose.task == "pose"
    assert pose.kpt_shape == (17, 3)
    assert pose.num_classes == 1


def test_corrupt_model_names_the_file(tmp_path):
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(DET.read_bytes()[: 1 << 20])  # a truncated download
    with pytest.raises(ModelError, match=r"corrupt.onnx: ONNX Runtime cannot load this model"):
        inspect_model(bad)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_text("this is not a model")
    with pytest.raises(ModelError, match=r"garbage.onnx: ONNX Runtime cannot load"):
        inspect_model(garbage)


def test_engine_file_needs_tensorrt(tmp_path):
    eng = tmp_path / "det.engine"
    eng.write_bytes(b"\0" * 16)
    backend = OnnxRuntimeBackend(OnnxRuntimeConfig())
    try:
        with pytest.raises(ModelError, match=r"det.engine is a TensorRT engine; the onnxruntime"):
            backend.open_engine(ModelConfig(name="d", path=eng, task="detect"))
    finally:
        backend.close()


def test_four_engines_run_concurrently(demo_frame):
    """All models of a frame execute at the same time, on different worker threads."""
    from edgeyolo.preprocess import Preprocessor

    backend = OnnxRuntimeBackend(OnnxRuntimeConfig(intra_op_threads=1), max_engines=4)
    engines = [
        backend.open_engine(ModelConfig(name=f"m{i}", path=p, task=t))
        for i, (p, t) in enumerate(
            [(DET, "detect"), (DET, "detect"), (POSE, "pose"), (POSE, "pose")]
        )
    ]
    spans: dict[str, tuple[float, float, int]] = {}
    for e in engines:
        original = e.run_sync

        def observed(host, _orig=original, _name=e.name):
            t0 = time.perf_counter()
            out = _orig(host)
            spans[_name] = (t0, time.perf_counter(), threading.get_ident())
            return out

        e.run_sync = observed  # type: ignore[method-assign]
    slot = backend.allocate_input(engines[0].info.input)
    Preprocessor(640, 640)(demo_frame, slot.host)
    slot.commit()

    async def frame() -> list[np.ndarray]:
        return await asyncio.gather(*(e.infer(slot) for e in engines))

    try:
        outs = asyncio.run(frame())
    finally:
        backend.close()
    assert [o.shape for o in outs] == [(1, 84, 8400)] * 2 + [(1, 56, 8400)] * 2
    np.testing.assert_array_equal(outs[0], outs[1])
    assert len({s[2] for s in spans.values()}) == 4
    latest_start = max(s[0] for s in spans.values())
    earliest_end = min(s[1] for s in spans.values())
    assert latest_start < earliest_end  # every run was in progress at one common instant


def test_auto_threads_split_the_cores_among_concurrent_models():
    """Default ``auto``: one model gets every core, four share them (at least 1 thread each)."""
    from edgeyolo.engines.onnxruntime import intra_op_threads, usable_cores

    assert OnnxRuntimeConfig().intra_op_threads == "auto"
    assert intra_op_threads("auto", 1, cores=8) == 8
    assert intra_op_threads("auto", 4, cores=8) == 2
    assert intra_op_threads("auto", 3, cores=8) == 2
    assert intra_op_threads("auto", 4, cores=2) == 1
    assert intra_op_threads("auto", 0, cores=2) == 2
    assert intra_op_threads(3, 4, cores=2) == 3  # an explicit number wins
    cores = usable_cores()
    for n_models, expected in ((1, cores), (4, max(1, cores // 4))):
        backend = OnnxRuntimeBackend(OnnxRuntimeConfig(), max_engines=n_models)
        try:
            engine = backend.open_engine(ModelConfig(name="d", path=DET, task="detect"))
            opened = engine._session.get_session_options().intra_op_num_threads
        finally:
            backend.close()
        assert opened == expected


def test_negative_thread_count_is_a_config_error():
    """A negative count is refused with the allowed values."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="expected 'auto', 0"):
        OnnxRuntimeConfig(intra_op_threads=-1)
    with pytest.raises(ValidationError):
        OnnxRuntimeConfig(intra_op_threads="many")  # type: ignore[arg-type]
