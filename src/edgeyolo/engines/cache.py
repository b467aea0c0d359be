"""The engine cache: keys, sidecars and stale checks; what finding a cached engine needs.

An engine only runs on the GPU model and the TensorRT version it was built with. Every engine
we build gets a sidecar ``<engine>.json`` holding its ``EngineKey`` (ONNX sha256, precision,
GPU name, compute capability, TensorRT version) and the ONNX file's metadata (class names,
task, keypoints), which the engine itself does not carry. The cache is a folder of such
pairs; a file name holds the whole key, and the sidecar is checked again before loading, so a
stale engine is never loaded silently: it is rebuilt, or refused when building is disabled.

The TensorRT runtime path imports this module only: the builder (``engines/builder.py``,
and through its calibrator the frame readers) is imported when an engine must be built.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import structlog

from edgeyolo.engines.model import inspect_onnx
from edgeyolo.errors import ModelError

Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "int8")
SIDECAR_FORMAT = 1
ENGINE_SUFFIXES = frozenset({".engine", ".plan", ".trt"})

ProgressFn = Callable[[str], None]


class GpuIdentity(Protocol):
    """What an engine key needs to know about the GPU (``gpu.CudaContext`` provides it)."""

    @property
    def name(self) -> str: ...

    @property
    def compute_capability(self) -> tuple[int, int]: ...


@dataclass(frozen=True, slots=True)
class EngineKey:
    """What an engine depends on; two engines with equal keys are interchangeable."""

    onnx_sha256: str
    precision: str
    gpu_name: str
    compute_capability: str  # "8.7"
    tensorrt_version: str  # "10.3.0.30"
    # The optimization profile's largest batch (min 1 / opt N / max N); 1: one frame per call.
    max_batch: int = 1

    def file_name(self, stem: str) -> str:
        """A cache file name that holds the whole key, readable by a person."""
        gpu = re.sub(r"[^a-z0-9]+", "-", self.gpu_name.lower()).strip("-") or "gpu"
        batch = f"b{self.max_batch}." if self.max_batch > 1 else ""
        return (
            f"{stem}.{self.precision}.{batch}{self.onnx_sha256[:16]}."
            f"{gpu}-sm{self.compute_capability.replace('.', '')}."
            f"trt{self.tensorrt_version}.engine"
        )

    def stale_reasons(self, found: EngineKey) -> list[str]:
        """Why an engine built under ``found`` must not run here (``self``); empty if it may."""
        reasons = []
        if found.onnx_sha256 != self.onnx_sha256:
            reasons.append(
                f"it was built from another ONNX file (sha256 {found.onnx_sha256[:16]}…, "
                f"the model is now {self.onnx_sha256[:16]}…)"
            )
        if found.precision != self.precision:
            reasons.append(f"it is {found.precision}, the config asks for {self.precision}")
        if found.max_batch != self.max_batch:
            reasons.append(
                f"its batch profile takes up to {found.max_batch} frame(s), the config asks "
                f"for max_batch {self.max_batch}"
            )
        if (found.gpu_name, found.compute_capability) != (self.gpu_name, self.compute_capability):
            reasons.append(
                f"it was built for GPU '{found.gpu_name}' (compute {found.compute_capability}), "
                f"this is '{self.gpu_name}' (compute {self.compute_capability})"
            )
        if found.tensorrt_version != self.tensorrt_version:
            reasons.append(
                f"it was built with TensorRT {found.tensorrt_version}, "
                f"this is TensorRT {self.tensorrt_version}"
            )
        return reasons

    def platform_reasons(self, found: EngineKey) -> list[str]:
        """Like ``stale_reasons`` but only GPU and TensorRT (for engines given directly)."""
        same = EngineKey(
            found.onnx_sha256,
            found.precision,
            self.gpu_name,
            self.compute_capability,
            self.tensorrt_version,
            found.max_batch,
        )
        return same.stale_reasons(found)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: Path) -> EngineKey:
        """Read a key from a sidecar, naming the file when a field is missing."""
        try:
            fields = {f: str(data[f]) for f in cls.__dataclass_fields__ if f != "max_batch"}
            # Sidecars written before batching have no max_batch: their engines run 1 frame.
            return cls(**fields, max_batch=int(data.get("max_batch", 1)))
        except KeyError as exc:
            raise ModelError(f"{where}: engine sidecar lacks key field {exc}") from exc
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{where}: engine sidecar has a bad max_batch: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Sidecar:
    """The ``.json`` written next to every engine edgeyolo builds."""

    key: EngineKey
    metadata: dict[str, str]
    onnx: str = ""
    built_at: str = ""
    build_seconds: float = 0.0
    format: int = SIDECAR_FORMAT

    def write(self, path: Path) -> None:
        """Write atomically (temp file + rename), so a crash never leaves half a sidecar."""
        data = {
            "format": self.format,
            "key": asdict(self.key),
            "metadata": self.metadata,
            "onnx": self.onnx,
            "built_at": self.built_at,
            "build_seconds": self.build_seconds,
        }
        atomic_write(path, json.dumps(data, indent=2, sort_keys=True).encode())

    @classmethod
    def read(cls, path: Path) -> Sidecar:
        """Read a sidecar; ``ModelError`` naming the file when it is unreadable."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path}: unreadable engine sidecar: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("key"), dict):
            raise ModelError(f"{path}: not an edgeyolo engine sidecar (no 'key' mapping)")
        meta = data.get("metadata") or {}
        return cls(
            key=EngineKey.from_dict(data["key"], path),
            metadata={str(k): str(v) for k, v in meta.items()},
            onnx=str(data.get("onnx", "")),
            built_at=str(data.get("built_at", "")),
            build_seconds=float(data.get("build_seconds", 0.0)),
            format=int(data.get("format", 0)),
        )


def sidecar_path(engine: Path) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    return engine.with_name(engine.name + ".json")


def current_key(
    onnx_sha256: str, precision: str, ctx: GpuIdentity, trt_version: str, max_batch: int = 1
) -> EngineKey:
    """The key an engine built now, on this GPU, would have."""
    major, minor = ctx.compute_capability
    return EngineKey(onnx_sha256, precision, ctx.name, f"{major}.{minor}", trt_version, max_batch)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file and a rename: never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True, slots=True)
class ResolvedEngine:
    """The engine file to load and what is known about it."""

    path: Path
    metadata: dict[str, str]
    built: bool


def timing_cache_path(cache_dir: Path, key: EngineKey) -> Path:
    """Timing caches are specific to the GPU and TensorRT version, like engines."""
    one = dataclasses.replace(key, max_batch=1)  # batch profiles share the timing cache
    name = one.file_name("timing").split(".", 3)[3].removesuffix(".engine")
    return cache_dir / f"timing.{name}.cache"


def resolve_onnx(
    onnx_path: Path,
    precision: Precision,
    *,
    cache_dir: Path,
    ctx: GpuIdentity,
    trt_version: str,
    allow_build: bool,
    workspace_mib: int = 1024,
    progress: ProgressFn | None = None,
    max_batch: int = 1,
) -> ResolvedEngine:
    """The cached engine for ``onnx_path`` on this GPU and TensorRT, built when missing.

    ``max_batch`` > 1 (a dynamic-batch ONNX) builds and keys the engine with a batch profile
    of min 1 / opt ``max_batch`` / max ``max_batch`` frames.
    """
    log = structlog.get_logger().bind(onnx=str(onnx_path), precision=precision)
    facts = inspect_onnx(onnx_path)
    key = current_key(facts.sha256, precision, ctx, trt_version, max_batch)
    engine = cache_dir / key.file_name(onnx_path.stem)
    side = sidecar_path(engine)
    problems: list[str] = []
    if engine.is_file() and side.is_file():
        found = Sidecar.read(side)
        problems = key.stale_reasons(found.key)
        if not problems:
            return ResolvedEngine(engine, found.metadata or facts.metadata, built=False)
    elif engine.is_file():
        problems = ["it has no sidecar .json (an interrupted build?)"]
    # Engines of the same model and precision for other GPUs / TensorRT versions: say so.
    batch = f"b{max_batch}." if max_batch > 1 else ""
    prefix = f"{onnx_path.stem}.{precision}.{batch}{facts.sha256[:16]}."
    for other in sorted(cache_dir.glob(prefix + "*.engine")) if cache_dir.is_dir() else []:
        if other != engine and sidecar_path(other).is_file():
            theirs = Sidecar.read(sidecar_path(other)).key
            problems += [f"{other.name}: {r}" for r in key.stale_reasons(theirs)]
    if not allow_build:
        why = "; ".join(problems) if problems else "no engine has been built for it yet"
        raise ModelError(
            f"{onnx_path}: no usable TensorRT engine in {cache_dir} for {precision} on "
            f"'{key.gpu_name}' with TensorRT {trt_version} ({why}), and tensorrt.build is "
            f"false: run `edgeyolo build {onnx_path} --precision {precision}` on this machine "
            "or set tensorrt.build: true"
        )
    if problems:
        log.warning("rebuilding stale engine", reasons=problems)
    # Only now: building needs the builder (and, for INT8, the calibrator and frame readers).
    from edgeyolo.engines.builder import BuildRequest, build_engine  # noqa: PLC0415

    result = build_engine(
        onnx_path,
        engine,
        BuildRequest(
            precision=precision,
            workspace_mib=workspace_mib,
            timing_cache=timing_cache_path(cache_dir, key),
            max_batch=max_batch,
        ),
        ctx,
        progress=progress or (lambda msg: log.info("build", progress=msg)),
        facts=facts,
    )
    return ResolvedEngine(result.engine, facts.metadata, built=True)


def check_engine_file(engine: Path, ctx: GpuIdentity, trt_version: str) -> dict[str, str]:
    """For an engine given directly: refuse one whose sidecar names another GPU or TensorRT.

    Returns the sidecar's metadata (empty when there is no sidecar: TensorRT then checks the
    version itself when deserializing).
    """
    side = sidecar_path(engine)
    if not side.is_file():
        return {}
    found = Sidecar.read(side)
    here = current_key(
        found.key.onnx_sha256, found.key.precision, ctx, trt_version, found.key.max_batch
    )
    problems = here.platform_reasons(found.key)
    if problems:
        source = f" `edgeyolo build {found.onnx}`" if found.onnx else " edgeyolo build"
        raise ModelError(
            f"{engine}: this engine cannot run here: {'; '.join(problems)}. Rebuild it on "
            f"this machine with{source}, or point the model at the .onnx file so that it is "
            "built and cached automatically"
        )
    return found.metadata
