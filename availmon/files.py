"""Files a person names. Read whole (a config, a CSV to import) without trusting them to be
files: a device such as /dev/zero, a FIFO or a runaway file is refused with a reason, never
read for ever or waited on. Written whole (a report): never left half-written."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path


class NotAFile(ValueError):
    """What was named cannot be read as a file of at most the size allowed."""


def read_limited(path: str | Path, limit: int, *, pipes: bool = False) -> bytes:
    """The file's bytes, never more than ``limit``: ``NotAFile`` where it is not a regular
    file (``pipes``: nor a pipe with a writer, as ``<(...)`` or ``/dev/stdin`` give) or is
    larger; ``OSError`` where it cannot be opened or read."""
    # O_NONBLOCK: opening a FIFO must not wait for a writer.
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        piped = pipes and stat.S_ISFIFO(mode)
        if not stat.S_ISREG(mode) and not piped:
            raise NotAFile("not a regular file")
        if piped:
            os.set_blocking(f.fileno(), True)  # its writer may not have written yet
        raw = f.read(limit + 1)
    if piped and not raw:
        raise NotAFile("a pipe nothing was written to")
    if len(raw) > limit:
        raise NotAFile(f"larger than {limit} bytes")
    return raw


def write_whole(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that no reader ever finds half of it (a report a disk
    filled under stays the last whole one): written beside it and renamed over it. What is
    not a regular file (``/dev/stdout``, a FIFO, a symlink) is written in place: renaming
    over it would replace the device or the link with a file."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        path.write_text(text, encoding="utf-8")
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        f = open(tmp, "x", encoding="utf-8")  # noqa: SIM115 (closed below)
    except PermissionError:
        # A file its owner may write in a directory they may not: in place, as before.
        path.write_text(text, encoding="utf-8")
        return
    try:
        with f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if st is not None:  # the report keeps its permissions, and its owner where we may
            os.chmod(tmp, stat.S_IMODE(st.st_mode))
            with contextlib.suppress(PermissionError):
                os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
