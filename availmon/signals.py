"""SIGTERM and Ctrl-C end a daemon in order: the owner sees ``stop`` set and unwinds."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable


def install_stop_handlers(stop: asyncio.Event) -> Callable[[], None]:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def remove() -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)

    return remove
