"""Configuration: pydantic models of the YAML file, and loading with clear errors.

No I/O here beyond reading the file. Relative paths in the file are resolved against the
file's own folder, so a config can be moved together with its models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from edgeyolo.errors import ConfigError
from edgeyolo.health import HttpConfig
from edgeyolo.sinks.mqtt_config import MqttConfig

BackendName = Literal["auto", "onnxruntime", "tensorrt"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReconnectConfig(_Strict):
    """Backoff for live sources that drop out (cameras, RTSP)."""

    initial_s: float = Field(0.5, gt=0, description="First wait before reopening a source.")
    max_s: float = Field(30.0, gt=0, description="Cap of the doubling wait between attempts.")


class CameraConfig(_Strict):
    """One frame source."""

    name: str = Field(min_length=1, description="Camera name, used in events, logs and topics.")
    source: int | str = Field(
        description=(
            "Device index (0), device path (/dev/video0), video or image file, RTSP/HTTP URL, "
            "or a GStreamer pipeline string ending in appsink."
        ),
    )
    fps: float | None = Field(
        None,
        gt=0,
        description="Target frames per second; frames beyond it are skipped. None: as delivered.",
    )
    pace: Literal["native", "fast"] = Field(
        "native",
        description="Files only: 'native' plays at the file's fps, 'fast' reads flat out.",
    )
    loop: bool = Field(False, description="Files only: start again at the end instead of stopping.")
    reconnect: ReconnectConfig = Field(default_factory=ReconnectConfig)

    @field_validator("source")
    @classmethod
    def _source_not_empty(cls, v: int | str) -> int | str:
        if isinstance(v, str) and not v.strip():
            raise ValueError("source must not be empty")
        if isinstance(v, int) and v < 0:
            raise ValueError("a device index must be 0 or more")
        return v


class ModelConfig(_Strict):
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

    @field_validator("path")
    @classmethod
    def _known_suffix(cls, v: Path) -> Path:
        if v.suffix.lower() not in {".onnx", ".engine", ".plan", ".trt"}:
            raise ValueError(f"expected an .onnx or .engine file, got '{v.name}'")
        return v


class OnnxRuntimeConfig(_Strict):
    """ONNX Runtime backend settings."""

    intra_op_threads: int = Field(
        1, ge=0, description="Threads inside one model run (0: ONNX Runtime's default)."
    )
    providers: list[str] | None = Field(
        None,
        description="Execution providers in order. None: CUDA when available, then CPU.",
    )


class TensorRTConfig(_Strict):
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


class LoggingConfig(_Strict):
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


class JsonlSinkConfig(_Strict):
    """Events as JSON lines."""

    enabled: bool = Field(True, description="Write events as JSON lines.")
    path: str = Field("-", description="'-' for stdout, else a file path (appended).")


class SinksConfig(_Strict):
    """Where events go."""

    jsonl: JsonlSinkConfig = Field(default_factory=JsonlSinkConfig)
    mqtt: MqttConfig | None = Field(None, description="MQTT output; None: off.")


class PipelineConfig(_Strict):
    """Per-camera pipeline settings."""

    stop_timeout_s: float = Field(
        10.0, gt=0, description="On SIGTERM/SIGINT, longest wait for in-flight frames."
    )


class Config(_Strict):
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

    @model_validator(mode="after")
    def _names_and_references(self) -> Config:
        for kind, names in (
            ("cameras", [c.name for c in self.cameras]),
            ("models", [m.name for m in self.models]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{kind} names must be unique, repeated: {', '.join(dupes)}")
        known = {c.name for c in self.cameras}
        for m in self.models:
            for cam in m.cameras or []:
                if cam not in known:
                    raise ValueError(
                        f"model '{m.name}' lists camera '{cam}', which is not defined "
                        f"(cameras: {', '.join(sorted(known))})"
                    )
        return self

    def models_for(self, camera: str) -> list[ModelConfig]:
        """The models that run on ``camera``."""
        return [m for m in self.models if m.cameras is None or camera in m.cameras]


Loc = tuple[int | str, ...]


class ConfigIssue(BaseModel):
    """One problem found in a config file."""

    model_config = ConfigDict(frozen=True)
    loc: str
    value: Annotated[Any, Field(repr=False)] = None
    message: str

    def __str__(self) -> str:
        shown = "" if self.value is None else f" = {self.value!r}"
        return f"{self.loc}{shown}: {self.message}"


class ConfigValidationError(ConfigError):
    """A config file failed validation; ``issues`` lists every problem found."""

    def __init__(self, path: Path, issues: list[ConfigIssue]) -> None:
        self.path = path
        self.issues = issues
        lines = "\n".join(f"  {i}" for i in issues)
        super().__init__(f"{path}: {len(issues)} problem(s) in the configuration:\n{lines}")


def _loc_str(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _lookup(data: Any, loc: Loc) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _issues_from(exc: ValidationError, raw: Any) -> list[ConfigIssue]:
    issues = []
    for err in exc.errors(include_url=False):
        # pydantic puts the union branch name into loc (e.g. 'int' / 'str'); drop it.
        loc = tuple(p for p in err["loc"] if p not in {"int", "str", "list[str]", "path"})
        msg = err["msg"].removeprefix("Value error, ")
        value = err.get("input") if err["type"] == "extra_forbidden" else _lookup(raw, loc)
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see config/example.yaml for every key)"
        if isinstance(value, dict | list):
            value = None  # whole sections are not worth echoing back
        issues.append(ConfigIssue(loc=_loc_str(loc), value=value, message=msg))
    return issues


def _resolve_paths(cfg: Config, base: Path) -> Config:
    def rel(p: Path) -> Path:
        p = p.expanduser()
        return p if p.is_absolute() else (base / p).resolve()

    models = [
        m.model_copy(
            update={
                "path": rel(m.path),
                "labels": rel(m.labels) if isinstance(m.labels, Path) else m.labels,
            }
        )
        for m in cfg.models
    ]
    cameras = []
    for c in cfg.cameras:
        src = c.source
        if isinstance(src, str) and _looks_like_file(src):
            src = str(rel(Path(src)))
        cameras.append(c.model_copy(update={"source": src}))
    trt = cfg.tensorrt.model_copy(update={"cache_dir": rel(cfg.tensorrt.cache_dir)})
    return cfg.model_copy(update={"models": models, "cameras": cameras, "tensorrt": trt})


def _looks_like_file(source: str) -> bool:
    return "://" not in source and "!" not in source and not source.startswith("/dev/")


def check_files(cfg: Config, path: Path) -> list[ConfigIssue]:
    """Problems with files the config points at (models, labels, video files)."""
    issues = []
    for i, m in enumerate(cfg.models):
        if not m.path.is_file():
            issues.append(
                ConfigIssue(loc=f"models[{i}].path", value=str(m.path), message="no such file")
            )
        if isinstance(m.labels, Path) and not m.labels.is_file():
            issues.append(
                ConfigIssue(loc=f"models[{i}].labels", value=str(m.labels), message="no such file")
            )
    for i, c in enumerate(cfg.cameras):
        if isinstance(c.source, str) and _looks_like_file(c.source) and not Path(c.source).exists():
            issues.append(
                ConfigIssue(loc=f"cameras[{i}].source", value=c.source, message="no such file")
            )
    del path
    return issues


def parse_config(raw: Any, path: Path) -> Config:
    """Validate already-parsed YAML ``raw`` read from ``path`` (paths resolved against it)."""
    if not isinstance(raw, dict):
        raise ConfigValidationError(
            path, [ConfigIssue(loc="(top level)", message="expected a mapping of keys to values")]
        )
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigValidationError(path, _issues_from(exc, raw)) from exc
    cfg = _resolve_paths(cfg, path.parent)
    missing = check_files(cfg, path)
    if missing:
        raise ConfigValidationError(path, missing)
    return cfg


def load_config(path: Path) -> Config:
    """Read, validate and resolve the config file at ``path``.

    Raises ``ConfigError`` naming the file (unreadable, not YAML) or ``ConfigValidationError``
    listing every problem as key path, value and message.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return parse_config(raw, path)
