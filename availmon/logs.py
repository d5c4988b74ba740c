"""Log output for every command: plain text for a terminal, JSON or logfmt for a log shipper.

The structured formats have stable keys, ``ts`` (ISO 8601, UTC), ``level``, ``logger`` and
``msg``, then any ``extra=`` fields of the call, so Loki, Vector or journald's collectors can
index them without a parsing rule. Escaping is the libraries' (python-json-logger, logfmter),
never ours.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

LogFormat = Literal["text", "json", "logfmt"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json", "logfmt")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def iso_time(record: logging.LogRecord) -> str:
    """The record's time as ISO 8601 in UTC, to the millisecond (sortable, unambiguous)."""
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


def formatter(fmt: LogFormat) -> logging.Formatter:
    """The formatter for ``--log-format``; the libraries are imported only when asked for."""
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        class _Json(JsonFormatter):
            def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
                return iso_time(record)

        return _Json(
            ["asctime", "levelname", "name", "message"],
            rename_fields={
                "asctime": "ts",
                "levelname": "level",
                "name": "logger",
                "message": "msg",
            },
        )
    if fmt == "logfmt":
        from logfmter import Logfmter

        class _Logfmt(Logfmter):
            def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
                return iso_time(record)

        return _Logfmt(
            keys=["ts", "level", "logger"],
            mapping={"ts": "asctime", "level": "levelname", "logger": "name"},
        )
    return logging.Formatter(TEXT_FORMAT)


def setup(level: str, fmt: LogFormat = "text") -> None:
    """Send every log record to stderr in ``fmt``. As :func:`logging.basicConfig`, this does
    nothing when the root logger already has handlers (a host program's, or pytest's)."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt))
    root.addHandler(handler)
    root.setLevel(level)


class Sparse:
    """Something that can happen many times a second (garbage from a port scanner, a probe
    that crashes at every run), logged at most once every ``every`` seconds with how many
    times it happened: a line each would bury everything else in the log."""

    def __init__(self, every: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self.clock = clock
        self.unlogged = 0
        self.logged_at: float | None = None

    def due(self) -> int | None:
        """Count one more; when a line is due, how many to report (this one included)."""
        self.unlogged += 1
        now = self.clock()
        if self.logged_at is not None and now - self.logged_at < self.every:
            return None
        count, self.unlogged, self.logged_at = self.unlogged, 0, now
        return count

    def rest(self) -> int:
        """How many were counted and not reported yet (for a last line at a stop)."""
        count, self.unlogged = self.unlogged, 0
        return count


class SparseBy:
    """``Sparse`` per key (a client's address, a host name): each key's line at most once
    every ``every`` seconds; at most ``keys`` keys are remembered, the longest quiet
    forgotten first, so a flood of new ones costs no memory."""

    def __init__(
        self, every: float = 60.0, keys: int = 1024, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.every, self.keys, self.clock = every, keys, clock
        self._by: OrderedDict[str, Sparse] = OrderedDict()

    def due(self, key: str) -> int | None:
        """``Sparse.due`` for ``key``."""
        one = self._by.pop(key, None) or Sparse(self.every, self.clock)
        self._by[key] = one  # the most recent last: the first forgotten is the quietest
        while len(self._by) > self.keys:
            self._by.popitem(last=False)
        return one.due()
