"""SIGTERM and Ctrl-C end a daemon in order: the owner sees ``stop`` set and unwinds; SIGHUP
asks it to reload its config."""

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


def install_reload_handler(reload: asyncio.Event) -> Callable[[], None]:
    """SIGHUP (systemd's ``ExecReload=/bin/kill -HUP $MAINPID``) asks for a config reload;
    the owner waits on ``reload``. Without this, SIGHUP's default action ends the process."""
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, reload.set)

    def remove() -> None:
        loop.remove_signal_handler(signal.SIGHUP)

    return remove
