"""TensorRT backend contract on the CPU: detection, engine I/O checks, cache keys, builds.

TensorRT is replaced by ``fake_tensorrt`` (same name-based API, engines pointing at ONNX
files); nothing here needs CUDA. What runs for real: edgeyolo's introspection of engine I/O
against the model config, the build-option translation per TensorRT version, the engine
cache with its stale-engine detection, and the probe the backend selection calls.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fake_tensorrt
from edgeyolo.config import ModelConfig
from edgeyolo.engines.builder import BuildRequest, build_engine, plan_build
from edgeyolo.engines.cache import EngineKey, Sidecar, check_engine_file, resolve_onnx, sidecar_path
from edgeyolo.engines.model import OnnxFacts, check_model, inspect_onnx
from edgeyolo.engines.tensorrt import describe_io, engine_model_info, read_engine_file
from edgeyolo.engines.trt_runtime import (
    import_tensorrt,
    is_real_tensorrt,
    parse_version,
    tensorrt_problem,
    tensorrt_unavailable_reason,
)
from edgeyolo.errors import BackendUnavailableError, ModelError
from helpers import DET, POSE, REPO, Gpu

# The `trt` fixture (the fake as `tensorrt`, at TensorRT 10.3) comes from helpers via conftest.


def load(path: Path, trt_module):
    data, header = read_engine_file(path)
    engine = trt_module.Runtime(trt_module.Logger()).deserialize_cuda_engine(data)
    assert engine is not None
    meta = (
        header or Sidecar.read(sidecar_path(path)).metadata
        if sidecar_path(path).exists()
        else header
    )
    return engine, meta


def info_of(path: Path, trt_module):
    engine, meta = load(path, trt_module)
    io = describe_io(engine, path)
    ctx = engine.create_execution_context()
    inp = next(t for t in io if t.is_input)
    if -1 in inp.shape:
        assert ctx.set_input_shape(inp.name, (1, *inp.shape[1:]))
    out = next(t for t in io if not t.is_input)
    return engine_model_info(path, io, meta, output_shape=tuple(ctx.get_tensor_shape(out.name)))


# --- detection of a real TensorRT ------------------------------------------------------------


def test_modules_import_without_tensorrt_or_cuda():
    """Importing the TensorRT backend, the builder and gpu/ loads neither tensorrt nor cuda."""
    code = (
        "import sys, edgeyolo.engines.tensorrt, edgeyolo.engines.builder, edgeyolo.gpu, "
        "edgeyolo.gpu.bench, edgeyolo.engines.trt_runtime, edgeyolo.commands.build, "
        "edgeyolo.commands.doctor\n"
        "bad = [m for m in sys.modules if m == 'tensorrt' or m.split('.')[0] == 'cuda']\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_tensorrt_module_says_how_to_install(monkeypatch):
    """Without any tensorrt module the reason names the package to install."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import raises ImportError
    reason = tensorrt_unavailable_reason()
    assert reason is not None
    assert "not installed" in reason
    assert "python3-libnvinfer" in reason
    with pytest.raises(BackendUnavailableError):
        import_tensorrt()


def test_stub_namespace_package_is_not_tensorrt(monkeypatch):
    """The stubs' empty namespace package imports, but is recognised as not TensorRT."""
    import types

    stub = types.ModuleType("tensorrt")
    stub.__path__ = ["/site-packages/tensorrt"]  # a namespace package: no Runtime, no version
    monkeypatch.setitem(sys.modules, "tensorrt", stub)
    assert not is_real_tensorrt(stub)
    reason = tensorrt_problem()
    assert reason is not None
    assert "not TensorRT" in reason
    assert "tensorrt-stubs" in reason


def test_installed_stubs_if_present_are_not_tensorrt():
    """With tensorrt-stubs installed (as in CI), the probe still says TensorRT is unusable."""
    pytest.importorskip("tensorrt_bindings")  # the stubs' sibling package
    assert tensorrt_unavailable_reason() is not None


def test_fake_tensorrt_without_gpu_reports_cuda(trt):
    """A real-looking TensorRT without a usable GPU or cuda-python gives a CUDA reason."""
    assert tensorrt_problem() is None
    reason = tensorrt_unavailable_reason()
    assert reason is None or "GPU" in reason or "cuda-python" in reason


def test_too_old_tensorrt_is_refused(trt):
    """TensorRT before 8.5 lacks the name-based API and is refused with its version."""
    trt.configure("8.4.3.1")
    reason = tensorrt_problem()
    assert reason is not None
    assert "8.4.3.1" in reason


@pytest.mark.parametrize(
    ("text", "expected"),
    [("10.3.0.30", (10, 3, 0, 30)), ("8.6.1", (8, 6, 1)), ("10.8.0.43+cuda12", (10, 8, 0, 43))],
)
def test_versions_are_integer_tuples(text, expected):
    """Versions compare as numbers: 10.10 is newer than 10.9."""
    assert parse_version(text) == expected
    assert parse_version("10.10.0") > parse_version("10.9.0")


# --- engine I/O against the config -----------------------------------------------------------


def fake_engine(tmp_path: Path, onnx: Path, name: str = "m", **fields) -> Path:
    return fake_tensorrt.write_fake_engine(
        tmp_path / f"{name}.engine", onnx, "Orin", "8.7", **fields
    )


def test_engine_io_becomes_model_info(trt, tmp_path):
    """A detect engine's I/O and sidecar metadata give task, classes and shapes."""
    info = info_of(fake_engine(tmp_path, DET), trt)
    assert info.task == "detect"
    assert info.input.shape == (1, 3, 640, 640)
    assert info.input.dtype == np.float32
    assert info.num_classes == 80
    assert info.names[0] == "person"
    check_model(ModelConfig(name="det", path=tmp_path / "m.engine", task="detect"), info)


def test_pose_engine_keypoints(trt, tmp_path):
    """A pose engine reports its keypoint layout from the metadata."""
    info = info_of(fake_engine(tmp_path, POSE), trt)
    assert info.task == "pose"
    assert info.kpt_shape == (17, 3)


def test_task_mismatch_names_the_model(trt, tmp_path):
    """A pose engine configured as detect is refused, naming the config key."""
    path = fake_engine(tmp_path, POSE)
    info = info_of(path, trt)
    with pytest.raises(ModelError, match=r"models\[people\]\.task is 'detect'"):
        check_model(ModelConfig(name="people", path=path, task="detect"), info)


def test_label_count_mismatch(trt, tmp_path):
    """Labels in the config must match the engine's class rows."""
    path = fake_engine(tmp_path, DET)
    info = info_of(path, trt)
    with pytest.raises(ModelError, match="3 labels"):
        check_model(ModelConfig(name="d", path=path, task="detect", labels=["a", "b", "c"]), info)


def test_fp16_io_and_dynamic_batch(trt, tmp_path):
    """FP16 I/O gives an FP16 input spec and a float32 output spec; batch -1 becomes 1."""
    info = info_of(fake_engine(tmp_path, DET, io_dtype="HALF", dynamic_batch=True), trt)
    assert info.input.dtype == np.float16
    assert info.input.shape == (1, 3, 640, 640)
    assert info.output.dtype == np.float32
    assert info.output.shape == (1, 84, 8400)


def test_non_linear_format_is_refused(trt, tmp_path):
    """Vectorized I/O formats are refused with the tensor's name."""
    path = fake_engine(tmp_path, DET, formats={"images": "CHW32"})
    engine, _meta = load(path, trt)
    with pytest.raises(ModelError, match="'images' uses the CHW32"):
        describe_io(engine, path)


def test_extra_output_is_refused(trt, tmp_path):
    """Engines with NMS plugins or several heads (more outputs) are refused."""
    extra = [{"name": "num_dets", "shape": [1, 1], "dtype": "INT32"}]
    path = fake_engine(tmp_path, DET, extra_outputs=extra)
    engine, meta = load(path, trt)
    with pytest.raises(ModelError, match="expected 1 input and 1 output"):
        engine_model_info(path, describe_io(engine, path), meta)


def test_ultralytics_engine_header(tmp_path, trt):
    """An Ultralytics .engine (length-prefixed JSON metadata) yields its metadata."""
    meta = {"task": "detect", "names": {"0": "person", "1": "car"}, "imgsz": [640, 640]}
    header = json.dumps(meta).encode()
    body = trt.fake_engine_bytes(DET)
    path = tmp_path / "u.engine"
    path.write_bytes(len(header).to_bytes(4, "little") + header + body)
    data, got = read_engine_file(path)
    assert data == body
    assert got["task"] == "detect"
    assert "person" in got["names"]


def test_engine_from_another_tensorrt_is_not_loaded(trt, tmp_path):
    """Deserializing an engine of another TensorRT version fails (None + logged error)."""
    path = fake_engine(tmp_path, DET)
    trt.configure("10.4.0.26")
    logger = trt.Logger()
    data, _ = read_engine_file(path)
    assert trt.Runtime(logger).deserialize_cuda_engine(data) is None
    assert any("not compatible" in m for _s, m in logger.messages)


# --- keys, cache and stale engines -----------------------------------------------------------


KEY = EngineKey("ab" * 32, "fp16", "Orin", "8.7", "10.3.0.30")


def test_key_file_name_holds_the_whole_key():
    """The cache file name shows model, precision, hash, GPU and TensorRT version."""
    name = KEY.file_name("det")
    assert name == "det.fp16.abababababababab.orin-sm87.trt10.3.0.30.engine"


def test_stale_reasons_name_what_changed():
    """GPU, TensorRT, ONNX and precision changes are each reported in words."""
    other = EngineKey("cd" * 32, "int8", "NVIDIA H100 80GB HBM3", "9.0", "10.7.0.23")
    reasons = KEY.stale_reasons(other)
    assert len(reasons) == 4
    text = " ".join(reasons)
    assert "H100" in text
    assert "TensorRT 10.7.0.23" in text
    assert "int8" in text
    assert KEY.stale_reasons(KEY) == []
    assert len(KEY.platform_reasons(other)) == 2  # only GPU and TensorRT for given engines


def facts(*, qdq=False, fp16=False, target=None) -> OnnxFacts:
    return OnnxFacts(Path("m.onnx"), "00", qdq, fp16, target)


@pytest.mark.parametrize(
    ("version", "precision", "kw", "net", "flags", "calib"),
    [
        ((8, 6, 1), "fp32", {}, ("EXPLICIT_BATCH",), (), False),
        ((8, 6, 1), "fp16", {}, ("EXPLICIT_BATCH",), ("FP16",), False),
        ((10, 3, 0), "fp16", {}, (), ("FP16",), False),
        ((10, 3, 0), "int8", {"qdq": True, "target": "tensorrt"}, (), ("INT8", "FP16"), False),
        ((10, 3, 0), "int8", {"calib": True}, (), ("INT8", "FP16"), True),
        ((11, 0, 0), "fp32", {}, ("STRONGLY_TYPED",), (), False),
        ((11, 0, 0), "fp16", {"fp16": True}, ("STRONGLY_TYPED",), (), False),
        ((11, 0, 0), "int8", {"qdq": True}, ("STRONGLY_TYPED",), (), False),
    ],
)
def test_build_plan_per_version(version, precision, kw, net, flags, calib):
    """Precision becomes flags up to TensorRT 10, and network typing from 11 on."""
    have_calib = kw.pop("calib", False)
    plan = plan_build(version, precision, facts(**kw), have_calibration=have_calib)
    assert plan.network_flags == net
    assert plan.builder_flags == flags
    assert plan.calibrator is calib


@pytest.mark.parametrize(
    ("version", "precision", "kw", "message"),
    [
        ((11, 0, 0), "fp16", {}, "export an FP16 ONNX"),
        ((11, 0, 0), "int8", {}, "removed implicit INT8"),
        ((11, 0, 0), "fp32", {"fp16": True}, "FP16 weights"),
        ((10, 3, 0), "int8", {}, "calibration frames"),
        ((10, 3, 0), "int8", {"qdq": True, "target": "cpu"}, "--target tensorrt"),
        ((10, 3, 0), "fp16", {"qdq": True}, "--precision int8"),
    ],
)
def test_impossible_builds_are_refused(version, precision, kw, message):
    """Combinations a TensorRT version cannot honour are refused saying what to do."""
    with pytest.raises(ModelError, match=message):
        plan_build(version, precision, facts(**kw), have_calibration=False)


def test_inspect_onnx_reads_precision_and_metadata():
    """The demo model is FP32 without Q/DQ and carries Ultralytics metadata."""
    f = inspect_onnx(DET)
    assert not f.qdq
    assert not f.fp16
    assert f.metadata["task"] == "detect"
    assert len(f.sha256) == 64
    int8 = REPO / "models" / "edgeyolo-demo-det-int8.onnx"
    if int8.is_file():
        q = inspect_onnx(int8)
        assert q.qdq
        assert q.quantized_for in {"cpu", "tensorrt"}


@pytest.mark.parametrize(
    ("version", "flags", "strongly"), [("10.3.0.30", ["FP16"], False), ("11.0.0.1", [], True)]
)
def test_build_engine_applies_the_plan(trt, tmp_path, version, flags, strongly):
    """build_engine sets the plan's flags, writes engine, sidecar and timing cache, reports."""
    trt.configure(version)
    lines: list[str] = []
    out = tmp_path / "det.engine"
    result = build_engine(
        DET,
        out,
        BuildRequest(precision="fp16", timing_cache=tmp_path / "timing.cache"),
        Gpu(),
        progress=lines.append,
    )
    doc = json.loads(out.read_bytes()[len(trt.MAGIC) :])
    assert doc["builder_flags"] == flags
    assert doc["strongly_typed"] is strongly
    assert (tmp_path / "timing.cache").read_bytes().startswith(b"fake-timing-cache:")
    side = Sidecar.read(result.sidecar)
    assert side.key.tensorrt_version == version
    assert side.key.gpu_name == "Orin"
    assert side.key.onnx_sha256 == inspect_onnx(DET).sha256  # keyed by the model given
    assert side.metadata["task"] == "detect"
    assert any("Building engine" in line for line in lines)
    # TensorRT 11: the FP32 model was converted to FP16 first, and the copy cleaned up.
    assert any("FP16 copy" in line for line in lines) is strongly
    assert Path(doc["onnx"]).name.endswith("det.fp16.onnx" if strongly else DET.name)
    assert Path(doc["onnx"]).is_file()  # the fake kept its copy of the temporary FP16 model
    assert not list(tmp_path.glob(".fp16-*"))


def test_fp16_conversion_keeps_float32_io_and_accuracy(tmp_path):
    """The FP16 copy has FP16 weights, float32 I/O, and ONNX Runtime's outputs within 1e-3."""
    import onnxruntime as ort

    from edgeyolo.engines.fp16 import convert_to_fp16

    half = convert_to_fp16(POSE, tmp_path / "pose16.onnx")
    assert inspect_onnx(half).fp16
    x = np.random.default_rng().random((1, 3, 640, 640), dtype=np.float32)
    ref = ort.InferenceSession(str(POSE), providers=["CPUExecutionProvider"]).run(
        None, {"images": x}
    )[0]
    out = ort.InferenceSession(str(half), providers=["CPUExecutionProvider"]).run(
        None, {"images": x}
    )[0]
    assert out.dtype == np.float32
    assert float(np.linalg.norm(out - ref) / np.linalg.norm(ref)) < 1e-3


def test_cache_builds_once_then_reuses(trt, tmp_path):
    """The first resolve builds, the second loads the cached engine."""
    first = resolve_onnx(
        DET, "fp16", cache_dir=tmp_path, ctx=Gpu(), trt_version=trt.__version__, allow_build=True
    )
    second = resolve_onnx(
        DET, "fp16", cache_dir=tmp_path, ctx=Gpu(), trt_version=trt.__version__, allow_build=True
    )
    assert first.built
    assert not second.built
    assert first.path == second.path
    assert (tmp_path / "timing.orin-sm87.trt10.3.0.30.cache").is_file()


def test_finding_a_cached_engine_loads_no_builder(trt, tmp_path):
    """A cache hit, in a fresh process, imports neither the builder nor the quantizer."""
    resolve_onnx(
        DET, "fp16", cache_dir=tmp_path, ctx=Gpu(), trt_version=trt.__version__, allow_build=True
    )
    code = (
        "import sys, types\n"
        "from pathlib import Path\n"
        "import fake_tensorrt\n"
        "sys.modules['tensorrt'] = fake_tensorrt\n"
        "import edgeyolo.engines.tensorrt as backend\n"
        "gpu = types.SimpleNamespace(name='Orin', compute_capability=(8, 7))\n"
        f"hit = backend.resolve_onnx(Path({str(DET)!r}), 'fp16', cache_dir=Path({str(tmp_path)!r}),"
        f" ctx=gpu, trt_version={trt.__version__!r}, allow_build=False)\n"
        "assert not hit.built, hit\n"
        "heavy = ('edgeyolo.engines.builder', 'edgeyolo.quantize', 'edgeyolo.sources.files')\n"
        "loaded = [m for m in heavy if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    path = [str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_new_tensorrt_rebuilds_or_refuses(trt, tmp_path):
    """After a TensorRT upgrade the old engine is not loaded: rebuilt, or refused with reasons."""
    old = resolve_onnx(
        DET, "fp16", cache_dir=tmp_path, ctx=Gpu(), trt_version="10.3.0.30", allow_build=True
    )
    trt.configure("10.4.0.26")
    with pytest.raises(ModelError) as info:
        resolve_onnx(
            DET, "fp16", cache_dir=tmp_path, ctx=Gpu(), trt_version="10.4.0.26", allow_build=False
        )
    msg = str(info.value)
    assert "tensorrt.build is false" in msg
    assert "built with TensorRT 10.3.0.30" in msg
    new = resolve_onnx(
        DET, "fp16", cache_dir=tmp_path, ctx=Gpu(), trt_version="10.4.0.26", allow_build=True
    )
    assert new.built
    assert new.path != old.path


def test_other_gpu_rebuilds(trt, tmp_path):
    """An engine cached for another GPU is reported and a new one is built for this GPU."""
    resolve_onnx(
        DET, "fp16", cache_dir=tmp_path, ctx=Gpu(), trt_version=trt.__version__, allow_build=True
    )
    h100 = Gpu("NVIDIA H100 80GB HBM3", (9, 0))
    with pytest.raises(ModelError, match="built for GPU 'Orin'"):
        resolve_onnx(
            DET,
            "fp16",
            cache_dir=tmp_path,
            ctx=h100,
            trt_version=trt.__version__,
            allow_build=False,
        )
    assert resolve_onnx(
        DET, "fp16", cache_dir=tmp_path, ctx=h100, trt_version=trt.__version__, allow_build=True
    ).built


def test_tampered_sidecar_is_stale(trt, tmp_path):
    """A cached engine whose sidecar key does not match is rebuilt, not trusted."""
    first = resolve_onnx(
        DET, "fp16", cache_dir=tmp_path, ctx=Gpu(), trt_version=trt.__version__, allow_build=True
    )
    side = sidecar_path(first.path)
    data = json.loads(side.read_text())
    data["key"]["precision"] = "int8"
    side.write_text(json.dumps(data))
    again = resolve_onnx(
        DET, "fp16", cache_dir=tmp_path, ctx=Gpu(), trt_version=trt.__version__, allow_build=True
    )
    assert again.built


def test_given_engine_for_another_gpu_is_refused(trt, tmp_path):
    """An .engine given directly whose sidecar names another GPU is refused, with the fix."""
    path = fake_engine(tmp_path, DET)
    with pytest.raises(ModelError, match="edgeyolo build"):
        check_engine_file(path, Gpu("NVIDIA H100 80GB HBM3", (9, 0)), trt.__version__)
    assert check_engine_file(path, Gpu(), trt.__version__)["task"] == "detect"


# --- commands --------------------------------------------------------------------------------


def test_doctor_onnxruntime_ready_here(capsys):
    """On a machine without TensorRT, doctor passes for onnxruntime and says what is missing."""
    from edgeyolo.cli import main

    assert main(["doctor", "--backend", "onnxruntime"]) == 0
    out = capsys.readouterr().out
    assert "ready for backend onnxruntime" in out
    assert "opencv" in out


def test_doctor_tensorrt_not_ready_without_it(capsys, monkeypatch):
    """For backend tensorrt, doctor fails and names the missing pieces and how to get them."""
    from edgeyolo.cli import main

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert main(["doctor", "--backend", "tensorrt"]) == 1
    out = capsys.readouterr().out
    assert "not ready for backend tensorrt" in out
    assert "python3-libnvinfer" in out


def test_build_command_without_tensorrt_says_why(capsys, monkeypatch):
    """`edgeyolo build` without TensorRT exits 2 with the reason (no traceback)."""
    from edgeyolo.cli import main

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert main(["build", str(DET), "--precision", "fp16"]) == 2
    assert "not installed" in capsys.readouterr().err


def test_dynamic_batch_onnx_gets_a_profile(trt, tmp_path):
    """An ONNX exported with a dynamic batch builds with a 1-frame optimization profile."""
    import onnx

    model = onnx.load(str(DET))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    dyn = tmp_path / "dyn.onnx"
    onnx.save(model, str(dyn))
    builder_seen = {}
    real_builder = trt.Builder

    class Spy(real_builder):
        def build_serialized_network(self, network, config):
            builder_seen["profiles"] = config.profiles
            return super().build_serialized_network(network, config)

    trt.Builder = Spy
    try:
        build_engine(dyn, tmp_path / "dyn.engine", BuildRequest(precision="fp32"), Gpu())
    finally:
        trt.Builder = real_builder
    (profile,) = builder_seen["profiles"]
    assert {tuple(s) for s in profile.shapes["images"]} == {(1, 3, 640, 640)}


@pytest.fixture
def default_logging():
    """structlog at its defaults (commands configure a warning-level filter globally)."""
    import structlog

    saved = structlog.get_config()
    structlog.reset_defaults()
    yield
    structlog.configure(**saved)


def test_auto_backend_falls_back_with_the_reason(default_logging):
    """backend auto without a usable TensorRT picks ONNX Runtime and logs why."""
    from structlog.testing import capture_logs

    from edgeyolo.config import Config
    from edgeyolo.engines.select import create_backend

    cfg = Config.model_validate(
        {
            "backend": "auto",
            "cameras": [{"name": "cam", "source": str(REPO / "media" / "demo-scene.mp4")}],
            "models": [{"name": "det", "path": str(DET), "task": "detect"}],
        }
    )
    with capture_logs() as logs:
        backend = create_backend(cfg)
    try:
        assert backend.name == "onnxruntime"
    finally:
        backend.close()
    chosen = [e for e in logs if e.get("event") == "backend selected"]
    assert chosen
    assert chosen[0]["backend"] == "onnxruntime"
    assert chosen[0]["why"]  # names what is missing (tensorrt, cuda-python or the GPU)


# --- batching several cameras (models[].max_batch) --------------------------------------------

DET_DYN = REPO / "models" / "edgeyolo-demo-det-dynbatch.onnx"


def test_batch_engine_gets_a_1_to_n_profile_and_its_own_cache_entry(trt, tmp_path):
    """max_batch 4 on a dynamic-batch ONNX: profile min 1 / opt 4 / max 4, keyed and cached
    apart from the batch-1 engine of the same file; its context takes 1 to 4 frames."""
    from edgeyolo.engines.trt_batch import profile_max_batch

    def resolve(max_batch):
        return resolve_onnx(
            DET_DYN,
            "fp16",
            cache_dir=tmp_path,
            ctx=Gpu(),
            trt_version=trt.__version__,
            allow_build=True,
            max_batch=max_batch,
        )

    one, four = resolve(1), resolve(4)
    assert one.built
    assert four.built
    assert ".fp16.b4." in four.path.name
    assert four.path.name.replace(".b4.", ".") == one.path.name
    assert Sidecar.read(sidecar_path(four.path)).key.max_batch == 4
    assert not resolve(4).built  # cached
    engine, _meta = load(four.path, trt)
    frame = (3, 640, 640)
    assert [tuple(d) for d in engine.get_tensor_profile_shape("images", 0)] == [
        (1, *frame),
        (4, *frame),
        (4, *frame),
    ]
    assert profile_max_batch(engine, "images") == 4
    assert profile_max_batch(load(one.path, trt)[0], "images") == 1
    ctx = engine.create_execution_context()
    assert ctx.set_input_shape("images", (3, *frame))
    assert tuple(ctx.get_tensor_shape("output0")) == (3, 84, 8400)
    assert not ctx.set_input_shape("images", (5, *frame))
    # One timing cache per GPU and TensorRT, whatever the batch profile.
    assert len(list(tmp_path.glob("timing.*.cache"))) == 1


def test_batch_profile_is_part_of_the_engine_key():
    """A batch-1 engine is stale for max_batch 4 (and says why); old sidecars mean batch 1."""
    four = EngineKey("ab" * 32, "fp16", "Orin", "8.7", "10.3.0.30", max_batch=4)
    assert four.stale_reasons(KEY) == [
        "its batch profile takes up to 1 frame(s), the config asks for max_batch 4"
    ]
    old = {f: getattr(KEY, f) for f in ("onnx_sha256", "precision", "gpu_name")}
    old |= {"compute_capability": "8.7", "tensorrt_version": "10.3.0.30"}
    assert EngineKey.from_dict(old, Path("old.json")) == KEY


def test_static_onnx_is_not_built_for_a_batch(trt, tmp_path):
    """max_batch 4 on a static batch-1 ONNX: refused before building, naming file and shape."""
    with pytest.raises(ModelError, match=r"max_batch is 4, but input 'images' has a static batch"):
        build_engine(DET, tmp_path / "d.engine", BuildRequest(precision="fp32", max_batch=4), Gpu())


def test_engine_profile_limits_max_batch(trt, tmp_path):
    """An engine whose profile stops at 2 frames refuses max_batch 4, naming the limit."""
    import dataclasses

    from edgeyolo.engines.trt_batch import profile_max_batch

    built = resolve_onnx(
        DET_DYN,
        "fp32",
        cache_dir=tmp_path,
        ctx=Gpu(),
        trt_version=trt.__version__,
        allow_build=True,
        max_batch=2,
    )
    engine, _meta = load(built.path, trt)
    info = dataclasses.replace(
        info_of(built.path, trt), max_batch=profile_max_batch(engine, "images")
    )
    check_model(ModelConfig(name="d", path=built.path, task="detect", max_batch=2), info)
    with pytest.raises(ModelError, match="takes at most 2 frames per call"):
        check_model(ModelConfig(name="d", path=built.path, task="detect", max_batch=4), info)


def test_torch_stand_in_evaluates_dynamic_batch_shapes_like_onnxruntime():
    """The GPU stand-in's converter computes a dynamic-batch export's shape arithmetic
    (Shape, Gather, Range, Expand, ConstantOfShape, ...) on the host: at batch 3 every such
    value equals ONNX Runtime's, and what is left for the device are operators it runs.
    (No PyTorch needed: the converter reads the graph with onnx and numpy.)"""
    import onnx
    import onnxruntime as ort

    from fake_tensorrt.torch_context import OnnxTorch

    path = DET_DYN.with_name("edgeyolo-demo-pose-dynbatch.onnx")  # det's head and keypoints
    conv = OnnxTorch(path, device=None, dtype=None)
    graph = onnx.load(str(path))
    names = [o for n in graph.graph.node for o in n.output]
    del graph.graph.output[:]
    graph.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names)
    sess = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((3, 3, 640, 640), np.float32)
    ref = dict(zip(names, sess.run(None, {"images": x}), strict=True))
    env: dict = {conv.input_name: x}
    host: dict = {}
    device_ops = set()
    for op, ins, outs, attrs in conv.nodes:  # forward()'s loop; device values from ORT
        if not conv.host_step(op, ins, outs, attrs, env, host):
            device_ops.add(op)
            env.update((o, ref[o]) for o in outs)
    assert len(host) > 100
    for name, value in host.items():
        np.testing.assert_allclose(value, ref[name], err_msg=name)
    assert device_ops <= {
        "Add", "Concat", "Conv", "Div", "MaxPool", "Mul", "Reshape", "Resize", "Sigmoid",
        "Slice", "Softmax", "Split", "Sub", "Transpose",
    }  # fmt: skip
