"""Waits that a cancellation always ends, and stops that always end (availmon/aio.py): on
Python 3.11 ``asyncio.wait_for`` swallows a cancellation that comes as its wait ends, and
aiomqtt waits for every PUBACK so; an agent told to stop then ran on for ever."""

from __future__ import annotations

import asyncio
import logging

import pytest

from availmon.aio import cancel_all, waited


async def test_waited_says_whether_the_wait_ended_in_time() -> None:
    done = asyncio.Event()
    done.set()
    assert await waited(done.wait(), 5) is True
    assert await waited(asyncio.Event().wait(), 0.01) is False


async def test_waited_never_swallows_a_cancellation_that_comes_as_its_wait_ends() -> None:
    woken = asyncio.Event()
    task = asyncio.create_task(waited(woken.wait(), 30))
    await asyncio.sleep(0)  # one turn of the loop: the task is waiting
    woken.set()  # the wait ends ...
    task.cancel()  # ... in the same turn as the stop (asyncio.wait_for returned True here)
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_stop_cancels_again_a_task_that_swallowed_its_cancellation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    swallowed = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            swallowed.set()  # as a library's wait_for does when its result comes meanwhile
        await asyncio.Event().wait()  # and runs on

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)  # one turn of the loop: the task is waiting
    with caplog.at_level(logging.WARNING, logger="availmon.aio"):
        await asyncio.wait_for(cancel_all([task], again_after=0.05), 30)
    assert swallowed.is_set()
    assert task.cancelled()
    assert "stubborn; cancelling again" in caplog.text  # the log says which task held it up


async def test_waited_passes_on_a_timeout_of_the_awaited_itself() -> None:
    async def times_out() -> None:
        raise TimeoutError("its own")

    with pytest.raises(TimeoutError, match="its own"):
        await waited(times_out(), 30)
