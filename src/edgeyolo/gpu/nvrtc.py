"""CUDA C++ kernels kept in the package, compiled at start-up with NVRTC, loaded with the driver.

``compile_kernel`` turns one source of ``edgeyolo/gpu/kernels`` into a cubin for a compute
capability with NVRTC (``cuda.bindings.nvrtc``; cuda-python 12.0-12.5: ``cuda.nvrtc``). No
GPU is needed for that, so CI compiles every kernel for Orin (sm_87) and Hopper (sm_90).
Cubins are cached on disk, keyed by the source's hash, the architecture, the NVRTC version
and the options: the next start loads the file instead of compiling (17-127 ms per source).

``Module`` loads a cubin into the current context (``cuModuleLoadData``) and hands out
``Kernel`` objects; ``Kernel.launch`` takes a ``KernelArgs`` whose argument block is built
once and reused every frame, so a launch costs one driver call.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import structlog

from edgeyolo.closing import Closing
from edgeyolo.gpu.errors import CudaError, check, driver

__all__ = [
    "DEFAULT_CACHE",
    "KernelArgs",
    "Module",
    "NvrtcError",
    "compile_kernel",
    "kernel_source",
    "load_kernels",
    "nvrtc",
    "nvrtc_version",
]

DEFAULT_CACHE = Path("~/.cache/edgeyolo/kernels")
# IEEE arithmetic as the CPU path does it: no fused multiply-adds, exact division.
OPTIONS = ("--fmad=false", "--prec-div=true", "--std=c++17")


class NvrtcError(CudaError):
    """NVRTC failed; ``detail`` holds the compiler log when there is one."""


def nvrtc() -> Any:
    """The cuda-python NVRTC module (``cuda.bindings.nvrtc``, else the 12.x ``cuda.nvrtc``)."""
    try:
        return importlib.import_module("cuda.bindings.nvrtc")
    except ImportError:
        return importlib.import_module("cuda.nvrtc")


def _nv_check(result: Any, call: str, log: str = "") -> Any:
    if isinstance(result, tuple):
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    if int(err) != 0:
        name = str(getattr(err, "name", err))
        raise NvrtcError(call, name, int(err), log)
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def nvrtc_version() -> tuple[int, int]:
    """(major, minor) of the NVRTC library cuda-python loads."""
    major, minor = _nv_check(nvrtc().nvrtcVersion(), "nvrtcVersion")
    return int(major), int(minor)


def supported_archs() -> list[int]:
    """Compute capabilities (e.g. 87, 90) this NVRTC can make machine code for."""
    nv = nvrtc()
    try:
        archs = _nv_check(nv.nvrtcGetSupportedArchs(), "nvrtcGetSupportedArchs")
    except AttributeError:  # very old NVRTC: assume the arch is known
        return []
    return [int(a) for a in archs]


def kernel_source(name: str) -> str:
    """The CUDA C++ source ``edgeyolo/gpu/kernels/<name>.cu`` shipped in the package."""
    return (resources.files("edgeyolo.gpu") / "kernels" / f"{name}.cu").read_text("utf-8")


def _target(arch: tuple[int, int]) -> tuple[str, bool]:
    """NVRTC's --gpu-architecture value and whether it yields a cubin (else PTX).

    A GPU newer than this NVRTC knows gets PTX of the newest architecture NVRTC supports,
    which the driver compiles when the module loads.
    """
    cc = arch[0] * 10 + arch[1]
    known = supported_archs()
    if not known or cc in known:
        return f"sm_{cc}", True
    older = [a for a in known if a <= cc]
    if not older:
        raise NvrtcError(
            "nvrtcCompileProgram",
            "unsupported architecture",
            -1,
            f"compute capability {arch[0]}.{arch[1]} is older than any this NVRTC supports "
            f"({min(known)})",
        )
    return f"compute_{max(older)}", False


def _compile(source: str, filename: str, target: str, cubin: bool) -> bytes:
    nv = nvrtc()
    prog = _nv_check(
        nv.nvrtcCreateProgram(source.encode(), filename.encode(), 0, [], []),
        "nvrtcCreateProgram",
    )
    try:
        opts = [f"--gpu-architecture={target}".encode(), *(o.encode() for o in OPTIONS)]
        res = nv.nvrtcCompileProgram(prog, len(opts), opts)
        if int(res[0]) != 0:
            size = _nv_check(nv.nvrtcGetProgramLogSize(prog), "nvrtcGetProgramLogSize")
            buf = b" " * int(size)
            _nv_check(nv.nvrtcGetProgramLog(prog, buf), "nvrtcGetProgramLog")
            log = buf.decode(errors="replace").strip("\x00 \n")
            _nv_check(res, f"nvrtcCompileProgram({filename}, {target})", log)
        kind = "CUBIN" if cubin else "PTX"
        size = _nv_check(getattr(nv, f"nvrtcGet{kind}Size")(prog), f"nvrtcGet{kind}Size")
        out = b" " * int(size)
        _nv_check(getattr(nv, f"nvrtcGet{kind}")(prog, out), f"nvrtcGet{kind}")
        return out
    finally:
        _nv_check(nv.nvrtcDestroyProgram(prog), "nvrtcDestroyProgram")


def compile_kernel(
    name: str, arch: tuple[int, int], cache_dir: Path | None = DEFAULT_CACHE
) -> bytes:
    """The compiled image (cubin, or PTX for GPUs newer than NVRTC) of kernel source ``name``.

    ``cache_dir`` None compiles every time; an unwritable cache is logged and skipped.
    """
    source = kernel_source(name)
    target, cubin = _target(arch)
    major, minor = nvrtc_version()
    key = hashlib.sha256(
        "\0".join([source, target, f"{major}.{minor}", *OPTIONS]).encode()
    ).hexdigest()[:16]
    path = None
    if cache_dir is not None:
        ext = "cubin" if cubin else "ptx"
        path = cache_dir.expanduser() / f"{name}-{target}-nvrtc{major}.{minor}-{key}.{ext}"
        try:
            return path.read_bytes()
        except OSError:
            pass
    image = _compile(source, f"{name}.cu", target, cubin)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(image)
            Path(tmp).replace(path)  # atomic: a concurrent start sees the old or new file
        except OSError as exc:
            structlog.get_logger().warning(
                "kernel cache not writable; compiling at every start",
                cache=str(path.parent),
                error=str(exc),
            )
    return image


class KernelArgs:
    """A kernel's argument block (``void*[]`` of pointers to C values), built once.

    ``values`` pairs each argument with its ctypes type, in the kernel's order; ``set(i, v)``
    changes one argument in place (a new source size, say) without rebuilding the block.
    """

    def __init__(self, *values: tuple[Any, type[Any]]) -> None:
        self._cells: list[Any] = [ctype(value) for value, ctype in values]
        self._block = (ctypes.c_void_p * len(self._cells))(
            *(ctypes.addressof(c) for c in self._cells)
        )
        self.address = ctypes.addressof(self._block)

    def set(self, index: int, value: Any) -> None:
        self._cells[index].value = value


class Kernel:
    """One ``extern "C" __global__`` function of a loaded module."""

    def __init__(self, module: Module, name: str, handle: Any) -> None:
        self.module = module
        self.name = name
        self.handle = handle
        self._drv = driver()

    def launch(
        self,
        grid: tuple[int, int, int],
        block: tuple[int, int, int],
        args: KernelArgs,
        stream: Any,
    ) -> None:
        """Enqueue the kernel on ``stream`` (an ``edgeyolo.gpu.Stream``)."""
        check(
            self._drv.cuLaunchKernel(self.handle, *grid, *block, 0, stream.handle, args.address, 0),
            f"cuLaunchKernel({self.name})",
        )


class Module(Closing):
    """A compiled image loaded into the current CUDA context."""

    def __init__(self, image: bytes, label: str = "module") -> None:
        self._drv = driver()
        self.label = label
        self.handle: Any = check(self._drv.cuModuleLoadData(image), f"cuModuleLoadData({label})")
        self._closed = False

    def kernel(self, name: str) -> Kernel:
        """The kernel called ``name`` (its extern "C" name)."""
        handle = check(
            self._drv.cuModuleGetFunction(self.handle, name.encode()),
            f"cuModuleGetFunction({self.label}.{name})",
        )
        return Kernel(self, name, handle)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        check(self._drv.cuModuleUnload(self.handle), "cuModuleUnload")


def load_kernels(
    name: str, arch: tuple[int, int], cache_dir: Path | None = DEFAULT_CACHE
) -> Module:
    """Compile (or take from the cache) and load kernel source ``name`` for ``arch``."""
    return Module(compile_kernel(name, arch, cache_dir), label=name)
