"""Reading a whole file a person named (a config, a CSV to import) without trusting it to be
one: a device such as /dev/zero, a FIFO or a runaway file is refused with a reason, never
read for ever or waited on."""

from __future__ import annotations

import os
import stat
from pathlib import Path


class NotAFile(ValueError):
    """What was named cannot be read as a file of at most the size allowed."""


def read_limited(path: str | Path, limit: int) -> bytes:
    """The file's bytes, never more than ``limit``: ``NotAFile`` where it is not a regular
    file or is larger; ``OSError`` where it cannot be opened or read."""
    # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below.
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise NotAFile("not a regular file")
        raw = f.read(limit + 1)
    if len(raw) > limit:
        raise NotAFile(f"larger than {limit} bytes")
    return raw
