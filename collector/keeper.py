"""The collector's day keeper (``collector.report.keep_days``), in a process of its own.

Working out a day of a busy quarter is a few tenths of a second of pure Python: in a thread
of the collector it would take the interpreter's lock from the event loop that serves the
board and takes in events, for as long. A process of its own has its own lock, runs below
the collector's priority, and rests between days, so the board never waits for it.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from multiprocessing.connection import Connection

from availmon.config import Estate
from collector.report import fingerprint, keep_days, keep_history
from collector.store import Store


def keep_pass(path: str, estate: Estate, now: datetime, rest: float) -> tuple[int, int, int]:
    """Keep every day not kept yet, then the history's quarters (``keep_history``), resting
    ``rest`` times as long as each took; returns how many days it made, how many of them
    the store would not keep, and how many quarters it worked out."""
    store = Store(path, tolerant=True)
    made = quarters = 0
    refused: list[int] = []
    try:
        for took in keep_days(store, estate, now, refused):
            made += 1
            time.sleep(rest * took)  # pacing: at most 1 / (1 + rest) of a core
        for took in keep_history(store, estate, now):
            quarters += 1
            time.sleep(rest * took)
    finally:
        store.close()
    return made, len(refused), quarters


def run(
    send: Connection,
    path: str,
    estate: Estate,
    now: datetime,
    rest: float,
    nice: int,
    expected: str | None = None,
) -> None:
    """The child's entry point: the counts made and refused, or what went wrong, sent
    back. ``expected``: the figures' key the collector reads under (``fingerprint``). A
    new process reads the time zone files and the holidays library's release afresh; after
    an upgrade of either, it would key what it keeps where the collector never reads, and
    drop every figure the collector kept (``keep_days`` drops what other rules kept). It
    then keeps and drops nothing, and says so."""
    try:
        os.nice(nice)
        if expected is not None and fingerprint(estate) != expected:
            send.send(
                "the time zone database or the holidays library changed since the collector"
                " started; restart it to keep the report's figures under the new rules"
            )
            return
        send.send(keep_pass(path, estate, now, rest))
    except Exception as exc:  # the collector logs it and tries again next pass
        send.send(f"{type(exc).__name__}: {exc}")
    finally:
        send.close()
