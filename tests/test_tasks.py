"""TaskGroup: no task outlives its block; the first failure cancels the rest and propagates."""

from __future__ import annotations

import asyncio
import sys

import pytest

from edgeyolo.tasks import TaskGroup
from helpers import run_async


async def forever(ended: list[str], name: str) -> None:
    try:
        await asyncio.sleep(3600)
    finally:
        ended.append(name)


async def fail_after(delay: float, exc: BaseException) -> None:
    await asyncio.sleep(delay)
    raise exc


def test_leaving_the_block_cancels_and_awaits_what_still_runs():
    async def main() -> None:
        ended: list[str] = []
        async with TaskGroup() as tg:
            a = tg.start(forever(ended, "a"), name="a")
            b = tg.start(asyncio.sleep(0, result=42))
            assert await b == 42
        assert a.cancelled()
        assert ended == ["a"]  # its cleanup ran before the block ended

    run_async(main(), 5)


def test_first_failure_cancels_the_others_and_the_body_then_raises_it():
    ended: list[str] = []
    body: list[str] = []

    async def block() -> None:
        async with TaskGroup() as tg:
            tg.start(forever(ended, "sibling"))
            tg.start(fail_after(0.01, ValueError("first")))
            tg.start(fail_after(0.5, KeyError("never reached")))
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                body.append("cancelled")
                raise

    async def main() -> None:
        with pytest.raises(ValueError, match="first"):
            await block()
        assert body == ["cancelled"]
        assert ended == ["sibling"]
        current = asyncio.current_task()
        assert current is not None
        if sys.version_info >= (3, 11):
            assert current.cancelling() == 0  # the group took its cancel request back
        # The task running the block is not left cancelled: waiting still works.
        assert await asyncio.wait_for(asyncio.sleep(0.01, result="ok"), 1) == "ok"

    run_async(main(), 5)


def test_a_failure_racing_the_end_of_the_body_is_not_lost():
    """The task fails in the same loop iteration the body leaves the block."""

    async def set_then_fail(ev: asyncio.Event) -> None:
        ev.set()
        raise RuntimeError("late")

    async def block() -> None:
        ev = asyncio.Event()
        async with TaskGroup() as tg:
            tg.start(set_then_fail(ev))
            await ev.wait()

    async def main() -> None:
        with pytest.raises(RuntimeError, match="late"):
            await block()

    run_async(main(), 5)


def test_the_body_error_propagates_and_tasks_are_cancelled():
    ended: list[str] = []

    async def block() -> None:
        async with TaskGroup() as tg:
            tg.start(forever(ended, "x"))
            await asyncio.sleep(0)
            raise KeyError("body")

    async def main() -> None:
        with pytest.raises(KeyError, match="body"):
            await block()
        assert ended == ["x"]

    run_async(main(), 5)


def test_cancelling_the_block_from_outside_cancels_the_tasks():
    ended: list[str] = []
    entered = asyncio.Event()

    async def owner() -> None:
        async with TaskGroup() as tg:
            tg.start(forever(ended, "child"))
            entered.set()
            await asyncio.sleep(3600)

    async def main() -> None:
        task = asyncio.create_task(owner())
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert ended == ["child"]

    run_async(main(), 5)


def test_a_task_cancelled_by_itself_is_not_a_failure_and_start_needs_the_block():
    async def main() -> None:
        tg = TaskGroup()
        coro = asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="outside"):
            tg.start(coro)
        async with tg:
            t = tg.start(asyncio.sleep(3600))
            t.cancel()
            await asyncio.sleep(0.01)
            assert t.cancelled()
        with pytest.raises(RuntimeError, match="outside"):
            tg.start(asyncio.sleep(0))

    run_async(main(), 5)
