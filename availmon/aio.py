"""Waits that a cancellation always ends, and stops that always end."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from typing import Any

log = logging.getLogger(__name__)

#: How long a stop waits for a cancelled task before it cancels it again.
AGAIN_AFTER = 5.0


async def waited(aw: Awaitable[object], timeout: float | None) -> bool:
    """Await ``aw`` for at most ``timeout`` seconds: True when it finished, False when the
    time ran out first.

    Not ``asyncio.wait_for``: on Python 3.11 it runs ``aw`` as a task of its own, and a
    cancellation that comes as that task finishes is swallowed (wait_for returns the
    result). A loop that waits so then never stops: an agent told to stop while an event
    woke its publisher hung the demo's Ctrl-C under load. ``asyncio.timeout`` awaits ``aw``
    in the caller's task, so the cancellation always comes out."""
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            await aw
    except TimeoutError:
        if not deadline.expired():
            raise  # ``aw``'s own
        return False
    return True


async def cancel_all(tasks: Iterable[asyncio.Task[Any]], again_after: float = AGAIN_AFTER) -> None:
    """Cancel ``tasks`` and wait until each has ended, cancelling again every ``again_after``
    seconds those still running, and saying which. On Python 3.11 a library can swallow a
    cancellation (its ``asyncio.wait_for`` returns the result when the two come together:
    aiomqtt waits so for every PUBACK), and the task then runs on while its owner waits
    for it for ever. This reaches a task whose own wait swallowed it; not a task inside a
    task group of one of ``tasks`` (an aborting group takes no second cancellation), whose
    loops must check their owner's flag (``availmon.mqtt.stop_if``)."""
    pending = {task for task in tasks if not task.done()}
    waited_for = 0.0
    while pending:
        if waited_for:
            names = ", ".join(sorted(task.get_name() for task in pending))
            log.warning("still stopping after %.0f s: %s; cancelling again", waited_for, names)
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=again_after)
        waited_for += again_after
