"""agent.memory: freed C heap goes back to the system (issue 9: the agent's RSS)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.memory import _malloc_trim, trim_heap


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(_malloc_trim() is None, reason="needs glibc's malloc_trim")
def test_freed_heap_below_a_live_block_is_returned() -> None:
    # 40 MB in 2 KiB blocks (malloc's heap, not mmap), the last one kept: it pins the heap's
    # top, so the freed blocks under it stay resident until trimmed.
    blocks = [bytes(2048) for _ in range(20_000)]
    keep = blocks[-1]
    del blocks
    before = rss_kib()
    assert trim_heap()
    assert before - rss_kib() > 20_000  # KiB: most of the 40 MB
    assert len(keep) == 2048
