"""Suite-wide guard: no test secret ever shows in anything a test captures (issue 15).

Every secret the tests make up contains ``CANARY``. After each phase of each test, the
captured stdout, stderr and log records are searched for it; a find fails the test, even
when the test itself passed. Output a test reads into a variable (a subprocess's) is
checked by that test, with ``assert_no_canary``.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

#: Part of every secret the tests make up (passwords, tokens, header values).
CANARY = "sEcReT-canary"


def assert_no_canary(*texts: str | bytes) -> None:
    for text in texts:
        shown = text.decode(errors="replace") if isinstance(text, bytes) else text
        assert CANARY.lower() not in shown.lower(), f"a test secret leaked: {shown[:2000]}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    leaked = [
        title
        for title, content in report.sections
        if title.startswith("Captured") and CANARY.lower() in content.lower()
    ]
    if leaked and report.outcome != "skipped":
        report.outcome = "failed"
        report.longrepr = f"a test secret ({CANARY}...) appears in: {', '.join(leaked)}"
