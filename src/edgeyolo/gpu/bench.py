"""How long after the GPU finishes does the loop know? Polling vs host callback, measured.

The GPU's completion moment is made observable on the host clock with a gate: the stream
waits on a page-locked flag (``cuStreamWaitValue32``) before recording the event, and the
host opens the gate at a known ``perf_counter`` time. The latency is then "gate opened" to
"``await waiter.wait`` returned", which includes the GPU noticing the flag (a few
microseconds, reported separately as the floor: a tight ``cuEventQuery`` loop without
asyncio). CPU use of the loop thread while waiting is ``thread_time`` over wall time.

For ``edgeyolo bench`` and ``scripts/gpu-check``; needs a GPU, as everything in ``gpu``.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass

import numpy as np

from edgeyolo.closing import Closing
from edgeyolo.gpu.errors import check, driver
from edgeyolo.gpu.memory import PinnedBuffer
from edgeyolo.gpu.runtime import Event, Stream
from edgeyolo.gpu.wait import CallbackWaiter, PollWaiter, WaitKind


class StreamGate(Closing):
    """A page-locked flag that streams can be made to wait on until the host opens it."""

    def __init__(self) -> None:
        self._drv = driver()
        self._flag = PinnedBuffer((1,), np.uint32)
        self._flag.array[0] = 0
        self._dev = check(
            self._drv.cuMemHostGetDevicePointer(self._flag.ptr, 0), "cuMemHostGetDevicePointer"
        )
        self._value = 0

    def hold(self, stream: Stream) -> None:
        """Make work enqueued on ``stream`` after this wait until the next ``release()``."""
        self._value += 1
        geq = int(self._drv.CUstreamWaitValue_flags.CU_STREAM_WAIT_VALUE_GEQ)
        check(
            self._drv.cuStreamWaitValue32(stream.handle, self._dev, self._value, geq),
            "cuStreamWaitValue32",
        )

    def release(self) -> float:
        """Open the gate; returns the ``perf_counter`` time it was opened."""
        t = time.perf_counter()
        self._flag.array[0] = self._value
        return t

    def close(self) -> None:
        self._flag.close()


@dataclass(frozen=True, slots=True)
class WaitLatency:
    """Microseconds from GPU completion to the loop knowing, and CPU spent meanwhile."""

    kind: str
    samples: int
    p50_us: float
    p90_us: float
    p99_us: float
    max_us: float
    loop_cpu_pct: float  # CPU time of the loop thread / wall time, while waiting
    process_cpu_pct: float  # whole process (includes the driver's callback thread)


def _open(gate: StreamGate, opened: list[float]) -> None:
    opened.append(gate.release())


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _summary(kind: str, lat: list[float], cpu: tuple[float, float, float]) -> WaitLatency:
    thread_s, process_s, wall_s = cpu
    us = [v * 1e6 for v in lat]
    return WaitLatency(
        kind=kind,
        samples=len(us),
        p50_us=statistics.median(us),
        p90_us=_pct(us, 0.9),
        p99_us=_pct(us, 0.99),
        max_us=max(us),
        loop_cpu_pct=100 * thread_s / wall_s,
        process_cpu_pct=100 * process_s / wall_s,
    )


async def measure_wait(
    kind: WaitKind,
    samples: int = 200,
    gpu_s: float = 0.004,
    hint: bool = True,
) -> WaitLatency:
    """Latency of ``kind`` waits for work that finishes ``gpu_s`` after being enqueued.

    ``hint``: pass ``gpu_s`` as the expected time (as engines do from their running
    average); without it the poller falls back to its spin-then-back-off schedule.
    """
    waiter = PollWaiter() if kind == "poll" else CallbackWaiter()
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    thread_s = process_s = wall_s = 0.0
    with Stream() as stream, Event() as event, StreamGate() as gate:
        for _ in range(samples + 5):
            gate.hold(stream)
            event.record(stream)
            opened: list[float] = []
            loop.call_later(gpu_s, _open, gate, opened)
            c0, p0, w0 = time.thread_time(), time.process_time(), time.perf_counter()
            await waiter.wait(event, stream, gpu_s if hint else None)
            done = time.perf_counter()
            c1, p1 = time.thread_time(), time.process_time()
            if not opened:  # cannot happen: the event waits for the gate
                raise RuntimeError("event completed before the gate opened")
            latencies.append(done - opened[0])
            thread_s += c1 - c0
            process_s += p1 - p0
            wall_s += done - w0
        stream.synchronize()
    waiter.close()
    name = f"{kind}{'' if hint or kind == 'callback' else ' (no estimate)'}"
    return _summary(name, latencies[5:], (thread_s, process_s, wall_s))


def measure_floor(samples: int = 200, gpu_s: float = 0.002) -> WaitLatency:
    """The same measurement with a tight ``cuEventQuery`` loop: what the GPU itself adds."""
    latencies: list[float] = []
    with Stream() as stream, Event() as event, StreamGate() as gate:
        for _ in range(samples):
            gate.hold(stream)
            event.record(stream)
            deadline = time.perf_counter() + gpu_s
            while time.perf_counter() < deadline:
                pass
            opened = gate.release()
            while not event.query():
                pass
            latencies.append(time.perf_counter() - opened)
        stream.synchronize()
    return _summary("busy query (floor)", latencies, (1.0, 1.0, 1.0))
