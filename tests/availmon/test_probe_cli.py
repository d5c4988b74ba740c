"""`availmon probe` as an operator uses it before deploying a check."""

from __future__ import annotations

import asyncio
import json
import sys

from tests.peers import free_port, http_target


async def availmon(*args: str) -> tuple[int, dict[str, object]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "availmon.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, json.loads(out) if out.strip() else {"stderr": err.decode()}


async def test_http_up_and_down() -> None:
    async with http_target() as target:
        rc, result = await availmon("probe", "http", target.url)
        assert (rc, result["ok"]) == (0, True)
        target.healthy = False
        rc, result = await availmon("probe", "http", target.url)
        assert (rc, result["ok"], result["error"]) == (1, False, "HTTP 503")
        # Accepting 503 (a maintenance page, say) is an option on the command line.
        rc, result = await availmon("probe", "http", target.url, "--expect-status", "503")
        assert (rc, result["ok"]) == (0, True)


async def test_tcp_refused_and_open() -> None:
    async with http_target() as target:
        rc, result = await availmon("probe", "tcp", f"127.0.0.1:{target.port}")
        assert (rc, result["ok"]) == (0, True)
    port = free_port()
    rc, result = await availmon("probe", "tcp", f"127.0.0.1:{port}")
    assert (rc, result["ok"], result["error"]) == (1, False, "connection refused")


async def test_icmp_loopback() -> None:
    rc, result = await availmon("probe", "icmp", "127.0.0.1")
    assert (rc, result["ok"], result["loss"]) == (0, True, 0.0)


async def test_bad_option_is_a_usage_error() -> None:
    rc, result = await availmon("probe", "http", "http://127.0.0.1:1/", "--no-such-option", "1")
    assert rc == 2
    assert "--no_such_option" in str(result["stderr"])


async def test_a_timeout_that_is_not_finite_and_positive_is_a_usage_error() -> None:
    """inf was 'unexpected OverflowError'; nan and -1 'timed out' at once, a failed probe."""
    for text, why in [
        ("inf", "expected seconds or a duration such as '30s', '5m', '250ms'"),
        ("nan", "expected seconds or a duration such as '30s', '5m', '250ms'"),
        ("-1", "expected seconds or a duration such as '30s', '5m', '250ms'"),
        ("0", "expected more than 0 seconds"),
        ("367d", "expected at most a year ('366d')"),
    ]:
        rc, result = await availmon("probe", "http", "http://127.0.0.1:1/", "--timeout", text)
        assert rc == 2, text
        assert str(result["stderr"]).splitlines()[-1] == (
            f"availmon probe: error: argument --timeout: {why}, got {text!r}"
        )


async def test_a_timeout_may_be_a_duration() -> None:
    port = free_port()
    rc, result = await availmon("probe", "tcp", f"127.0.0.1:{port}", "--timeout", "250ms")
    assert (rc, result["ok"], result["error"]) == (1, False, "connection refused")


async def test_an_option_that_is_not_utf8_is_a_usage_error() -> None:
    rc, result = await availmon("probe", "http", "http://127.0.0.1:1/", "--body-match", "\udcff")
    assert rc == 2
    assert str(result["stderr"]).splitlines()[-1] == (
        "availmon probe: error: argument --body-match: not UTF-8: '\\xff'"
    )
