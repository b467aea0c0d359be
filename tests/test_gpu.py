"""CUDA wrappers on a real GPU: buffers, streams, events, errors, and the two waits."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from edgeyolo.engines.trt_runtime import cuda_problem

pytestmark = pytest.mark.gpu

_REASON = cuda_problem()
if _REASON is not None:
    pytest.skip(f"no CUDA here: {_REASON}", allow_module_level=True)

from edgeyolo.gpu import (  # noqa: E402 - only importable usefully with CUDA present
    CallbackWaiter,
    CudaContext,
    CudaError,
    DeviceBuffer,
    Event,
    PinnedBuffer,
    PollWaiter,
    Stream,
    wait,
)
from edgeyolo.gpu.bench import StreamGate, measure_wait  # noqa: E402


@pytest.fixture(scope="module")
def ctx():
    with CudaContext(0) as c:
        yield c


def test_context_reports_the_gpu(ctx):
    """The context names the GPU, its compute capability and memory."""
    assert ctx.name
    major, _minor = ctx.compute_capability
    assert major >= 5
    free, total = ctx.memory()
    assert 0 < free <= total


def test_round_trip_through_device_memory(ctx):
    """Pinned -> device -> pinned copies on a stream return the same random bytes."""
    rng = np.random.default_rng()
    data = rng.standard_normal((1, 3, 64, 80)).astype(np.float32)
    with (
        PinnedBuffer(data.shape, np.float32) as src,
        PinnedBuffer(data.shape, np.float32) as dst,
        DeviceBuffer(data.nbytes) as dev,
        Stream() as stream,
        Event() as done,
    ):
        np.copyto(src.array, data)
        dst.array.fill(np.nan)  # poison: every element must be written
        stream.copy_htod(dev, src)
        stream.copy_dtoh(dst, dev)
        done.record(stream)
        done.synchronize()
        assert done.query()
        np.testing.assert_array_equal(dst.array, data)


def test_event_query_is_a_state_not_an_error(ctx):
    """A held stream's event reports not-ready (False), then ready once released."""
    with Stream() as stream, Event() as ev, StreamGate() as gate:
        gate.hold(stream)
        ev.record(stream)
        time.sleep(0.01)
        assert ev.query() is False
        gate.release()
        ev.synchronize()
        assert ev.query() is True


def test_cuda_errors_name_the_call_and_the_error(ctx):
    """A failing driver call raises CudaError with the CUresult name, never an assert."""
    with Stream() as stream, Event(timing=False) as a, Event(timing=False) as b:
        a.record(stream)
        b.record(stream)
        stream.synchronize()
        with pytest.raises(CudaError) as info:
            a.elapsed_ms(b)  # events without timing cannot be timed
    assert "cuEventElapsedTime" in str(info.value)
    assert info.value.name.startswith("CUDA_ERROR_")


def test_timing_events_measure_gpu_time(ctx):
    """Events with timing measure the gap the gate held the stream (about 20 ms)."""
    with Stream() as stream, Event(timing=True) as t0, Event(timing=True) as t1, StreamGate() as g:
        t0.record(stream)
        g.hold(stream)
        t1.record(stream)
        time.sleep(0.02)
        g.release()
        t1.synchronize()
        assert 15 <= t0.elapsed_ms(t1) <= 200


@pytest.mark.parametrize("kind", ["poll", "callback"])
def test_waits_do_not_block_the_loop(ctx, kind):
    """While a wait is pending, other tasks keep running; the wait returns after release."""

    async def main() -> tuple[int, float]:
        waiter = PollWaiter() if kind == "poll" else CallbackWaiter()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        with Stream() as stream, Event() as ev, StreamGate() as gate:
            gate.hold(stream)
            ev.record(stream)
            task = asyncio.create_task(ticker())
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, gate.release)
            t0 = time.perf_counter()
            await waiter.wait(ev, stream)
            took = time.perf_counter() - t0
            task.cancel()
            stream.synchronize()
        waiter.close()
        return ticks, took

    ticks, took = asyncio.run(main())
    assert took >= 0.045
    assert ticks >= 10  # the loop ran the ticker during the 50 ms wait


def test_module_wait_polls_an_event(ctx):
    """``await wait(event)`` returns once recorded work is done."""

    async def main() -> None:
        with Stream() as stream, Event() as ev, StreamGate() as gate:
            gate.hold(stream)
            ev.record(stream)
            asyncio.get_running_loop().call_later(0.01, gate.release)
            await wait(ev)
            assert ev.query()

    asyncio.run(main())


@pytest.mark.parametrize("kind", ["poll", "callback"])
def test_wait_latency_is_measurable(ctx, kind):
    """The latency benchmark runs and reports plausible numbers (values are not asserted)."""
    result = asyncio.run(measure_wait(kind, samples=20, gpu_s=0.003))
    assert result.samples == 20
    assert 0 < result.p50_us < 50_000
