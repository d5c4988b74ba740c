"""``availmon demo`` as a newcomer runs it (README, "Quick start"): the banner, every check up,
the webmail outage and the degraded intranet on the demo's schedule, a clean Ctrl-C, and a
restart on the same state that carries on where the first life stopped.

The demo runs as a subprocess at ``--speed 10`` (its schedule and checks ten times faster:
one cycle is 30 s) on free ports. A subprocess offers nothing to await, so its JSON API and
its database (read-only) are polled against a deadline. "On schedule" is asserted as what the
schedule guarantees: nothing fails before its window opens. No assertion depends on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from availmon import demo
from availmon.clock import utcnow
from probes import icmp
from tests.e2e import procs
from tests.peers import free_port

SPEED = 10
DEADLINE = 60.0  # only guards a hung test
CHECKS = {
    ("dc", "core-switch"),
    ("dc", "council-website"),
    ("dc", "webmail"),
    ("dc", "file-server"),
    ("ccc-guildhall", "wan-link"),
    ("ccc-guildhall", "intranet"),
    ("hdc-pathfinder", "wan-link"),
    ("scdc-cambourne", "wan-link"),
}

pytestmark = pytest.mark.skipif(
    icmp.icmp_mode() is icmp.Mode.NONE,
    reason="the demo pings: " + icmp.describe_mode(icmp.Mode.NONE),
)


@dataclass
class Demo:
    proc: asyncio.subprocess.Process
    banner: list[str]
    launched: datetime  # before the process started: its schedule starts after this
    log: Path

    @property
    def api(self) -> str:
        return self.banner[2].split()[-1]

    def since_launch(self, demo_seconds: float) -> datetime:
        """The earliest real time at which the schedule's ``demo_seconds`` can come."""
        return self.launched + timedelta(seconds=demo_seconds / SPEED)

    async def status(self) -> dict[str, Any]:
        if self.proc.returncode is not None:
            raise AssertionError(f"the demo exited:\n{self.log.read_text()[-4000:]}")
        got = await procs.http_get(self.api)
        assert got is not None, "nothing answers on the demo's web port"
        assert got[0] == 200, got
        return dict(json.loads(got[1]))

    async def until(self, done: Any, what: str) -> dict[str, Any]:
        """Poll the status API until ``done(status)``; return that status."""
        result: dict[str, Any] = await procs.poll_until(
            self.status, done, timeout=DEADLINE, what=what
        )
        return result

    async def interrupt(self) -> tuple[int, str]:
        """Ctrl-C, as a terminal sends it; returns the exit code and the rest of stdout."""
        self.proc.send_signal(signal.SIGINT)
        assert self.proc.stdout is not None
        rest = await asyncio.wait_for(self.proc.stdout.read(), DEADLINE)
        code = await asyncio.wait_for(self.proc.wait(), DEADLINE)
        return code, rest.decode()


@dataclass
class Ports:
    broker: int
    targets: int


@contextlib.asynccontextmanager
async def running_demo(tmp: Path, state: Path, ports: Ports, life: int) -> AsyncIterator[Demo]:
    log = tmp / f"demo-{life}.log"
    launched = utcnow()
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            *procs.AVAILMON,
            "demo",
            "--state-dir", str(state),
            "--speed", str(SPEED),
            "--web-port", "0",
            "--broker-port", str(ports.broker),
            "--target-port", str(ports.targets),
            cwd=tmp,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
        )  # fmt: skip
    try:
        assert proc.stdout is not None
        banner: list[str] = []
        while not banner or not banner[-1].endswith("Ctrl-C stops."):
            line = await asyncio.wait_for(proc.stdout.readline(), DEADLINE)
            if not line:
                raise AssertionError(f"the demo exited:\n{log.read_text()[-4000:]}")
            if line.strip():
                banner.append(line.decode().rstrip("\n"))
        yield Demo(proc, banner, launched, log)
    finally:
        if proc.returncode is None:
            proc.kill()
            await asyncio.wait_for(proc.wait(), DEADLINE)


def events(state: Path) -> list[dict[str, Any]]:
    rows = procs.query(
        state / "collector.db",
        "SELECT agent, seq, site, check_name, from_state, to_state, evidence FROM events",
    )
    return [dict(r) for r in rows]


def came_up(state: Path, after_seq: dict[str, int] | None = None) -> set[tuple[str, str]]:
    """Checks with an unknown -> up event (numbered after ``after_seq[agent]`` when given)."""
    floor = after_seq or {}
    return {
        (e["site"], e["check_name"])
        for e in events(state)
        if (e["from_state"], e["to_state"]) == ("unknown", "up")
        and e["seq"] > floor.get(e["agent"], 0)
    }


def outage(status: dict[str, Any], check: str, **match: Any) -> dict[str, Any] | None:
    for o in status["recent_outages"]:
        if o["check_name"] == check and all(o[k] == v for k, v in match.items()):
            return dict(o)
    return None


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def assert_clean_exit(code: int, rest: str, log: Path, state: Path) -> None:
    err = log.read_text(errors="replace")
    assert code == 0, err[-4000:]
    *alerts, last = rest.strip().splitlines()
    assert last == f"availmon demo stopped; state kept in {state}"
    # Anything else it printed is its alert receiver telling what it got.
    assert [a for a in alerts if not a.startswith("alert received: ")] == []
    assert "Traceback" not in err, err[-4000:]
    assert "CancelledError" not in err
    assert [line for line in err.splitlines() if " ERROR " in line or " CRITICAL " in line] == []
    # Agents stop before the broker: none was left unable to say so.
    assert "could not publish stopped status" not in err


async def test_demo_runs_its_schedule_stops_cleanly_and_carries_on(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ports = Ports(broker=free_port(), targets=free_port())
    webmail_timeout = 2.0 / SPEED  # config/demo.toml's timeouts, at this speed
    intranet_timeout = 3.0 / SPEED

    async with running_demo(tmp_path, state, ports, life=1) as first:
        port = first.api.split(":")[2].split("/")[0]
        base = f"http://127.0.0.1:{port}"
        assert first.banner == [
            f"availmon demo is running (4 agents, 8 checks, {SPEED} times faster).",
            f"  board        {base}/   (wall screen: /?wall)",
            f"  status JSON  {base}/api/v1/status",
            f"  metrics      {base}/metrics",
            f"  state        {state}",
            "  alerts       go to the demo's webhook receiver, which prints them here",
            "The 'webmail' check fails 3 s after start for 12 s in every 30 s;",
            "'intranet' is slow (degraded) from 18 s to 24 s into every 30 s. Ctrl-C stops.",
        ]
        await procs.poll_until(lambda: came_up(state) == CHECKS, what="every check up")

        # webmail: down with an open outage, shown in the API and in /metrics ...
        status = await first.until(
            lambda s: any(o["check_name"] == "webmail" for o in s["open_outages"]),
            "the webmail outage",
        )
        [opened] = [o for o in status["open_outages"] if o["check_name"] == "webmail"]
        assert (opened["site"], opened["area"], opened["state"]) == ("dc", "email", "down")
        scraped = await procs.metrics(int(port))
        up = {
            dict(labels)["check"]: v
            for (n, labels), v in scraped.items()
            if n == "availmon_check_up"
        }
        assert (up["webmail"], up["council-website"]) == (0.0, 1.0)
        # ... then closed when the target recovers, all within the schedule's window.
        status = await first.until(
            lambda s: outage(s, "webmail", id=opened["id"], end=None) is None,
            "the webmail outage to close",
        )
        closed = outage(status, "webmail", id=opened["id"])
        assert closed is not None
        assert at(closed["start"]) >= first.since_launch(demo.FLAKY_DOWN[0]) - timedelta(
            seconds=webmail_timeout
        )
        assert at(closed["end"]) >= first.since_launch(demo.FLAKY_DOWN[1]) - timedelta(
            seconds=webmail_timeout
        )
        # The event that opened the outage watched here (on a loaded machine the next cycle's
        # may already be stored too).
        [down] = [e for e in events(state) if f"o:{e['agent']}:{e['seq']}" == opened["id"]]
        assert (down["check_name"], down["to_state"]) == ("webmail", "down")
        assert json.loads(down["evidence"])["error"] == "HTTP 503"

        # intranet: degraded (slow, not down) in its window, after the webmail outage watched
        # (on a loaded machine that may be the second cycle's, after the first slow window).
        def slow_after(s: dict[str, Any]) -> dict[str, Any] | None:
            return next(
                (
                    dict(o)
                    for o in s["recent_outages"]
                    if (o["check_name"], o["state"]) == ("intranet", "degraded")
                    and at(o["start"]) > at(closed["end"])
                ),
                None,
            )

        status = await first.until(
            lambda s: slow_after(s) is not None, "the intranet to be degraded next"
        )
        slow = slow_after(status)
        assert slow is not None
        assert at(slow["start"]) >= first.since_launch(demo.SLOW_WINDOW[0]) - timedelta(
            seconds=intranet_timeout
        )
        # The webmail outage reached the demo's alert receiver once, then its resolution.
        await procs.poll_until(
            lambda: procs.query(
                state / "collector.db",
                "SELECT kind FROM outbox WHERE outage_id=? AND status='sent' ORDER BY id",
                opened["id"],
            ),
            lambda rows: [r[0] for r in rows] == ["firing", "resolved"],
            what="the webmail alert and its resolution delivered",
        )
        code, rest = await first.interrupt()
    assert_clean_exit(code, rest, first.log, state)
    received = [line for line in rest.splitlines() if "webmail at Data centre" in line]
    assert len(received) == 2, rest
    assert received[0].startswith(
        "alert received: webmail at Data centre (Shared service (data centre)) down since"
    )
    assert ": HTTP 503  <http://127.0.0.1:9810/board/outages/" in received[0]
    assert received[1].startswith("alert received: RESOLVED: webmail at Data centre")

    # The first life's record, as a second life will find it.
    outages_before = {
        o["id"] for o in procs.query(state / "collector.db", "SELECT id FROM outages")
    }
    last_seq: dict[str, int] = {}
    for e in events(state):
        last_seq[e["agent"]] = max(last_seq.get(e["agent"], 0), e["seq"])
    assert {opened["id"], slow["id"]} <= outages_before

    async with running_demo(tmp_path, state, ports, life=2) as second:
        assert second.banner[4] == f"  state        {state}"
        # Every agent carries on numbering where it stopped: each check's new unknown -> up
        # event comes after the first life's events.
        await procs.poll_until(
            lambda: came_up(state, last_seq) == CHECKS, what="every check up again"
        )
        status = await second.until(
            lambda s: {a["status"] for a in s["agents"]} == {"online"}, "every agent online"
        )
        # The first life's outages are still there, unchanged where they had closed.
        still = outage(status, "webmail", id=opened["id"])
        assert still == closed
        assert outage(status, "intranet", id=slow["id"]) is not None
        code, rest = await second.interrupt()
    assert_clean_exit(code, rest, second.log, state)
