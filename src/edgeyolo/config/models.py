"""The pydantic models of the config file (see config/example.yaml for every key).

Pure data and validation: importing this module imports no implementation module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from edgeyolo.config.base import Strict
from edgeyolo.config.http import HttpConfig
from edgeyolo.config.mqtt import MqttConfig
from edgeyolo.config.tracking import LineConfig, TrackingConfig, ZoneConfig, check_unique
from edgeyolo.sources.kinds import LIVE_OVERRIDABLE, pipeline_problem, source_kind

BackendName = Literal["auto", "onnxruntime", "tensorrt"]


class ReconnectConfig(Strict):
    """Backoff for live sources that drop out (cameras, RTSP)."""

    initial_s: float = Field(0.5, gt=0, description="First wait before reopening a source.")
    max_s: float = Field(30.0, gt=0, description="Cap of the doubling wait between attempts.")


class CameraConfig(Strict):
    """One frame source."""

    name: str = Field(min_length=1, description="Camera name, used in events, logs and topics.")
    source: int | str = Field(
        description=(
            "Device index (0), device path (/dev/video0), video or image file, RTSP/HTTP URL, "
            "or a GStreamer pipeline string ending in appsink."
        ),
    )
    live: bool | None = Field(
        None,
        description=(
            "GStreamer pipelines and network URLs: true reconnects when it ends (a camera), "
            "false ends (or loops) like a file. None: from the source (a pipeline by its first "
            "element: v4l2src, nvarguscamerasrc, rtspsrc ... are live; filesrc, videotestsrc "
            "are not)."
        ),
    )
    fps: float | None = Field(
        None,
        gt=0,
        description="Target frames per second; frames beyond it are skipped. None: as delivered.",
    )
    pace: Literal["native", "fast"] = Field(
        "native",
        description=(
            "Finite sources: 'native' plays at the file's fps (a pipeline: at its own clock), "
            "'fast' delivers every frame as fast as the models take them."
        ),
    )
    loop: bool = Field(
        False, description="Finite sources: start again at the end instead of stopping."
    )
    reconnect: ReconnectConfig = Field(default_factory=ReconnectConfig)
    zones: list[ZoneConfig] = Field(
        default_factory=list, description="Polygons for tracked models' zone events."
    )
    lines: list[LineConfig] = Field(
        default_factory=list, description="Directed lines with in/out counts (tracked models)."
    )

    @model_validator(mode="after")
    def _unique_zones_and_lines(self) -> CameraConfig:
        check_unique(f"camera '{self.name}': zone", [z.name for z in self.zones])
        check_unique(f"camera '{self.name}': line", [ln.name for ln in self.lines])
        return self

    @field_validator("source")
    @classmethod
    def _source_not_empty(cls, v: int | str) -> int | str:
        if isinstance(v, str) and not v.strip():
            raise ValueError("source must not be empty")
        if isinstance(v, int) and v < 0:
            raise ValueError("a device index must be 0 or more")
        if isinstance(v, str) and source_kind(v) == "gstreamer":
            problem = pipeline_problem(v)
            if problem:
                raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _live_applies(self) -> CameraConfig:
        kind = source_kind(self.source)
        if self.live is not None and kind not in LIVE_OVERRIDABLE:
            raise ValueError(
                f"live applies to GStreamer pipelines and network URLs only; "
                f"this source is a {kind} (remove live)"
            )
        return self


class ModelConfig(Strict):
    """One model to run on some or all cameras."""

    name: str = Field(min_length=1, description="Model name, used in events, logs and topics.")
    path: Path = Field(description="An Ultralytics-format .onnx file, or a TensorRT .engine file.")
    task: Literal["detect", "pose"] = Field(description="What the model does; checked against it.")
    labels: Path | list[str] | None = Field(
        None,
        description="Class names: a list, or a text file with one per line. None: from the model.",
    )
    conf: float = Field(0.25, ge=0.0, lt=1.0, description="Keep candidates scoring above this.")
    iou: float = Field(0.7, gt=0.0, le=1.0, description="NMS IoU threshold (class-aware).")
    max_det: int = Field(300, ge=1, le=10000, description="Most detections kept per frame.")
    classes: list[int | str] | None = Field(
        None, description="Only report these classes (ids or labels). None: all."
    )
    cameras: list[str] | None = Field(
        None, description="Run only on these cameras. None: every camera."
    )
    precision: Literal["fp32", "fp16", "int8"] = Field(
        "fp16",
        description="TensorRT only, when path is an .onnx: precision of the engine built from it.",
    )
    max_batch: int = Field(
        1,
        ge=1,
        le=64,
        description=(
            "Most frames (one per camera) run in one engine call. Above 1 the model needs a "
            "dynamic batch dimension (an ONNX export with dynamic=True, or a TensorRT engine "
            "whose profile reaches this size); 1: one frame per call, as a static model runs."
        ),
    )
    batch_timeout_ms: float = Field(
        10.0,
        ge=0.0,
        le=1000.0,
        description=(
            "With max_batch > 1: longest a frame waits for other cameras' frames before its "
            "batch runs anyway (0: run with whatever is waiting). 10 ms is a third of a 30 fps "
            "frame interval."
        ),
    )
    tracking: TrackingConfig = Field(
        default_factory=TrackingConfig, description="Object tracking (off unless enabled)."
    )

    @field_validator("path")
    @classmethod
    def _known_suffix(cls, v: Path) -> Path:
        if v.suffix.lower() not in {".onnx", ".engine", ".plan", ".trt"}:
            raise ValueError(f"expected an .onnx or .engine file, got '{v.name}'")
        return v


class OnnxRuntimeConfig(Strict):
    """ONNX Runtime backend settings."""

    intra_op_threads: int | Literal["auto"] = Field(
        "auto",
        description=(
            "Threads inside one model run. 'auto': this machine's cores split among the models "
            "that run concurrently (at least 1 each); 0: ONNX Runtime's own default."
        ),
    )
    providers: list[str] | None = Field(
        None,
        description="Execution providers in order. None: CUDA when available, then CPU.",
    )

    @field_validator("intra_op_threads", mode="before")
    @classmethod
    def _auto_or_count(cls, v: object) -> object:
        # One clear message instead of one per branch of the union.
        if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
            return v
        raise ValueError("expected 'auto', 0 (ONNX Runtime's default) or a positive count")


class GpuPathConfig(Strict):
    """Where the TensorRT backend letterboxes frames and decodes outputs."""

    preprocess: Literal["gpu", "cpu"] = Field(
        "gpu",
        description="'gpu': upload the raw frame once and letterbox it with a CUDA kernel; "
        "'cpu': letterbox with OpenCV and upload the model input (the ONNX Runtime way).",
    )
    decode: Literal["gpu", "cpu"] = Field(
        "gpu",
        description="'gpu': threshold and compact candidates with a CUDA kernel and copy only "
        "those back; 'cpu': copy the whole output back and decode it with numpy.",
    )
    nms: Literal["gpu", "cpu"] = Field(
        "gpu",
        description="With decode: gpu, 'gpu': NMS and the mapping to source pixels run on the "
        "GPU too and only the detections come back (the same ones bit for bit); 'cpu': the "
        "candidates come back and numpy runs NMS.",
    )
    decode_capacity: int = Field(
        4096,
        ge=16,
        le=30000,
        description="Candidates per frame the GPU decode keeps; a frame with more (overflow) "
        "is decoded on the CPU from the full output instead, and counted.",
    )
    kernel_cache: Path = Field(
        Path("~/.cache/edgeyolo/kernels"),
        description="Where the CUDA kernels compiled at start-up (NVRTC) are cached.",
    )
    cuda_graph: Literal["auto", "on", "off"] = Field(
        "auto",
        description="One launch per frame: capture a camera's upload, letterbox, engines and "
        "decodes into a CUDA graph per slot set and replay it. 'auto': where the capture works "
        "(else stream launches, logged once); 'on': a failed capture is an error; 'off': "
        "stream launches. Models with max_batch > 1 always use stream launches.",
    )


class TensorRTConfig(Strict):
    """TensorRT backend settings."""

    cache_dir: Path = Field(
        Path("~/.cache/edgeyolo/engines"),
        description="Where engines built from .onnx models are cached.",
    )
    build: bool = Field(
        True, description="Build (and rebuild stale) engines from .onnx; False: refuse instead."
    )
    workspace_mib: int = Field(1024, ge=64, description="Builder workspace memory limit.")
    wait: Literal["poll", "callback"] = Field(
        "poll",
        description="How the loop learns that the GPU finished: polling events or host callbacks.",
    )
    gpu: GpuPathConfig = Field(
        default_factory=GpuPathConfig,
        description="GPU letterbox and decode (CUDA kernels) or the CPU ones.",
    )


class LoggingConfig(Strict):
    """Structured logging."""

    format: Literal["auto", "json", "console"] = Field(
        "auto", description="'auto': console on a terminal, JSON lines otherwise."
    )
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    frame_sample: int = Field(
        1, ge=0, description="Log the per-frame line for every Nth frame (0: never)."
    )
    summary_interval_s: float = Field(
        10.0, gt=0, description="Seconds between summary lines (fps, drops, percentiles)."
    )


class JsonlSinkConfig(Strict):
    """Events as JSON lines."""

    enabled: bool = Field(True, description="Write events as JSON lines.")
    path: str = Field("-", description="'-' for stdout, else a file path (appended).")


class SinksConfig(Strict):
    """Where events go."""

    jsonl: JsonlSinkConfig = Field(default_factory=JsonlSinkConfig)
    mqtt: MqttConfig | None = Field(None, description="MQTT output; None: off.")


class PipelineConfig(Strict):
    """Per-camera pipeline settings."""

    stop_timeout_s: float = Field(
        10.0, gt=0, description="On SIGTERM/SIGINT, longest wait for in-flight frames."
    )


class Config(Strict):
    """The whole configuration file."""

    backend: BackendName = Field("auto", description="Inference backend.")
    cameras: list[CameraConfig] = Field(min_length=1, description="Frame sources.")
    models: list[ModelConfig] = Field(min_length=1, description="Models to run.")
    onnxruntime: OnnxRuntimeConfig = Field(default_factory=OnnxRuntimeConfig)
    tensorrt: TensorRTConfig = Field(default_factory=TensorRTConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    sinks: SinksConfig = Field(default_factory=SinksConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)

    # Field validators, not a model validator: an error then names its key (cameras,
    # models) instead of "(top level)". cameras is declared first, so models sees it.
    @field_validator("cameras", "models")
    @classmethod
    def _unique_names(cls, items: list[Any], info: ValidationInfo) -> list[Any]:
        check_unique(str(info.field_name)[:-1], [item.name for item in items])
        return items

    @field_validator("models")
    @classmethod
    def _known_cameras(cls, models: list[ModelConfig], info: ValidationInfo) -> list[ModelConfig]:
        cameras = info.data.get("cameras")
        if cameras is None:
            return models  # the cameras are invalid: that is reported there
        known = {c.name for c in cameras}
        for m in models:
            for cam in m.cameras or []:
                if cam not in known:
                    raise ValueError(
                        f"model '{m.name}' lists camera '{cam}', which is not defined "
                        f"(cameras: {', '.join(sorted(known))})"
                    )
        return models

    def models_for(self, camera: str) -> list[ModelConfig]:
        """The models that run on ``camera``."""
        return [m for m in self.models if m.cameras is None or camera in m.cameras]
