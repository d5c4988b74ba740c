"""A site, for real (issue 5 part 5): the agent runs in its own network namespace, probes a
target in a ``dc`` namespace, and reaches the broker over a veth that the test cuts.

While the broker link is down the target fails and recovers; the agent sees it all and keeps
it in its spool; when the link returns the collector ends with exactly the outage the agent
saw. Then again with the agent killed with ``kill -9`` during the cut and restarted before
the link returns. Every run prints its tally and checks that it adds up.

What the agent saw is read from its own log (each transition with the time of the first
probe of its run, and each event id once committed to the spool), never inferred.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from availmon.clock import from_iso, to_iso
from availmon.config import Estate
from collector.main import Collector
from collector.metrics import REJECT_REASONS
from collector.store import Store
from tests.e2e.netns import DC_ADDR, SiteNetwork, ip, leftovers, site_network, unavailable
from tests.peers import Mosquitto, estate, mosquitto, wait_until

pytestmark = pytest.mark.netns

REPO = Path(__file__).resolve().parents[2]
AVAILMON = str(Path(sys.executable).with_name("availmon"))
SITE = "hq"
CHECK = {
    "name": "web",
    "type": "http",
    "area": "internet_web",
    "interval": 0.5,
    "timeout": 0.4,
    "failures_to_down": 3,
    "successes_to_up": 2,
}
#: Guards against a hung test only; no step waits on a clock.
STEP_TIMEOUT = 40.0

TRANSITION = re.compile(rf"check {SITE}/web: (\w+) -> (\w+) at (\S+) \(")
SPOOLED = re.compile(r"agent\.main: spooled (\S+)$")
DELIVERED = re.compile(r"delivered \d+ events \(last seq (\d+)\)")
CONNECTED = re.compile(r"connected to broker ")
LOST = re.compile(r"agent\.publisher: broker \S+: .*; retrying in")

T = TypeVar("T")


@dataclass(frozen=True)
class Seen:
    """One transition as the agent logged it; ``at`` as the collector stores it."""

    from_: str
    to: str
    at: str


class AgentRun:
    """``availmon agent`` inside the site namespace, its stderr read line by line in a thread
    and handed to the event loop, so the test waits on the agent's own words."""

    def __init__(self, net: SiteNetwork, config: Path, log_file: Path) -> None:
        argv = [AVAILMON, "--log-level", "DEBUG", "agent", "--config", str(config)]
        self.proc = subprocess.Popen(
            net.exec_argv(net.site, [*argv, "--site", SITE]),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=REPO,
        )
        self.lines: list[str] = []
        self.ended = False
        self._loop = asyncio.get_running_loop()
        self._waiters: list[asyncio.Future[None]] = []
        self._log_file = log_file
        self._reader = threading.Thread(target=self._read, name="agent-log", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        with self._log_file.open("a", encoding="utf-8") as copy:
            for raw in self.proc.stderr:
                line = raw.decode(errors="replace").rstrip("\n")
                copy.write(line + "\n")
                self._loop.call_soon_threadsafe(self._heard, line, False)
        self._loop.call_soon_threadsafe(self._heard, None, True)

    def _heard(self, line: str | None, ended: bool) -> None:
        if line is not None:
            self.lines.append(line)
        self.ended = self.ended or ended
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def wait_for(self, find: Callable[[list[str]], T | None], what: str) -> T:
        """The first non-None ``find(lines)``, re-evaluated on every line the agent logs."""
        try:
            async with asyncio.timeout(STEP_TIMEOUT):
                while (found := find(self.lines)) is None:
                    if self.ended:
                        raise AssertionError(f"agent exited before {what}")
                    waiter = self._loop.create_future()
                    self._waiters.append(waiter)
                    await waiter
                return found
        except TimeoutError:
            tail = "\n".join(self.lines[-40:])
            raise AssertionError(f"agent never logged {what}; last lines:\n{tail}") from None

    def transitions(self) -> list[Seen]:
        return [
            Seen(m[1], m[2], to_iso(from_iso(m[3])))
            for line in self.lines
            if (m := TRANSITION.search(line))
        ]

    def spooled(self) -> list[str]:
        return [m[1] for line in self.lines if (m := SPOOLED.search(line))]

    async def transition(self, from_: str, to: str) -> Seen:
        """Wait until the agent logged ``from_ -> to`` and committed it to its spool."""

        def find(_: list[str]) -> Seen | None:
            seen = self.transitions()
            for i, t in enumerate(seen):
                # Each transition is logged, then spooled, then "spooled <id>" is logged.
                if (t.from_, t.to) == (from_, to) and len(self.spooled()) > i:
                    return t
            return None

        return await self.wait_for(find, f"{from_} -> {to} (spooled)")

    async def count(self, pattern: re.Pattern[str], n: int, what: str) -> None:
        """Wait until ``pattern`` has appeared ``n`` times in this run's log."""
        await self.wait_for(
            lambda lines: sum(1 for x in lines if pattern.search(x)) >= n or None, what
        )

    async def delivered(self, seq: int) -> None:
        """Wait until the agent has its PUBACK for ``seq`` and removed it from its spool."""

        def find(lines: list[str]) -> bool | None:
            return any((m := DELIVERED.search(x)) and int(m[1]) >= seq for x in lines) or None

        await self.wait_for(find, f"delivery of seq {seq}")

    async def kill(self) -> None:
        """``kill -9``: no shutdown path runs, whatever the agent was doing."""
        os.kill(self.proc.pid, signal.SIGKILL)
        await asyncio.to_thread(self.proc.wait, STEP_TIMEOUT)

    async def stop(self) -> int:
        """SIGTERM, the agent's ordered shutdown; SIGKILL if it hangs."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.proc.wait, STEP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            await asyncio.to_thread(self.proc.wait, STEP_TIMEOUT)
            raise AssertionError("agent ignored SIGTERM") from None


def seq_of(event_id: str) -> int:
    return int(event_id.rsplit(":", 1)[1])


@dataclass
class Rig:
    """One run's peers: the namespaces, the broker, the collector, the target, the agents."""

    net: SiteNetwork
    tmp: Path
    broker: Mosquitto
    cfg: Estate
    collector: Collector
    store: Store
    agent_config: Path
    flag: Path
    runs: list[AgentRun] = field(default_factory=list)

    @property
    def spool_path(self) -> Path:
        return self.cfg.agent.state_dir / f"{self.cfg.agent_id(SITE)}.spool.db"

    def start_agent(self) -> AgentRun:
        run = AgentRun(self.net, self.agent_config, self.tmp / f"agent-{len(self.runs)}.log")
        self.runs.append(run)
        return run

    def fail_target(self) -> None:
        self.flag.touch()

    def heal_target(self) -> None:
        self.flag.unlink()

    def spool(self) -> list[tuple[str, str]]:
        """(from, to) of every event still in the agent's spool: not yet acknowledged."""
        conn = sqlite3.connect(f"file:{self.spool_path}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT from_state, to_state FROM events ORDER BY seq")
            return [(r[0], r[1]) for r in rows]
        finally:
            conn.close()

    def stored(self) -> list[dict[str, Any]]:
        return self.store.events()

    def outages(self) -> list[tuple[str, str, str | None, str]]:
        rows = sorted(self.store.outages(), key=lambda r: r["start"])
        return [(r["state"], r["start"], r["end"], r["source"]) for r in rows]

    async def collector_has(self, ids: list[str]) -> None:
        """Wait (on the collector's own notification) until it stored exactly ``ids`` and no
        outage is left open."""

        def done() -> bool:
            stored = [e["id"] for e in self.store.events()]
            return sorted(stored) == sorted(ids) and not self.store.outages(open_only=True)

        await wait_until(self.collector.changed, done, timeout=STEP_TIMEOUT)

    def tally(self) -> dict[str, Any]:
        """What the agents sent against what the collector did with it, from its metrics."""

        def sample(name: str, labels: dict[str, str] | None = None) -> int:
            value = self.collector.metrics.registry.get_sample_value(name, labels)
            return int(value or 0)

        sent = [i for run in self.runs for i in run.spooled()]
        return {
            "sent": len(sent),
            "delivered": sample("availmon_events_ingested_total"),
            "duplicates": sample("availmon_events_duplicate_total"),
            "rejected": {
                reason: n
                for reason in REJECT_REASONS
                if (n := sample("availmon_events_rejected_total", {"reason": reason}))
            },
            "heartbeats": sample("availmon_heartbeats_total"),
            "messages": sample("availmon_mqtt_messages_total"),
        }


@pytest.fixture
def net() -> Iterator[SiteNetwork]:
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    with site_network() as net:
        yield net
    assert leftovers(net.tag) == [], "namespaces or links left behind"


def test_a_killed_runs_namespaces_are_reaped_and_a_live_ones_kept() -> None:
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    gone = subprocess.Popen(["true"])
    gone.wait(timeout=30)  # its pid now names a process that no longer exists
    orphan = f"avm-site-{gone.pid:x}-00"
    ours = f"avm-dc-{os.getpid():x}-ff"
    for name in (orphan, ours):
        ip("netns", "add", name)
    try:
        with site_network():
            names = ip("netns", "list")
            assert orphan not in names
            assert ours in names
    finally:
        for name in (orphan, ours):
            ip("netns", "delete", name, check=False)


def test_a_network_takes_a_tag_no_namespace_of_its_process_holds() -> None:
    """The tag's last byte is random; a run that already holds a namespace with that byte
    (the test above holds one by hand) must not fail on "File exists"."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    held = [f"avm-dc-{os.getpid():x}-{n:02x}" for n in range(255)]
    batch = "".join(f"netns add {name}\n" for name in held)
    try:
        subprocess.run(["ip", "-batch", "-"], input=batch, text=True, check=True, timeout=120)
        with site_network() as net:
            assert net.tag == f"{os.getpid():x}-ff"
    finally:
        delete = "".join(f"netns delete {name}\n" for name in held)
        subprocess.run(["ip", "-force", "-batch", "-"], input=delete, text=True, timeout=120)
    assert not [name for name in ip("netns", "list").split() if name in held]


@contextlib.asynccontextmanager
async def target_in(net: SiteNetwork, flag: Path, log_file: Path) -> AsyncIterator[int]:
    """The flag-file HTTP target inside the dc namespace; yields its port, kills it on exit."""
    with log_file.open("wb") as log:
        argv = [sys.executable, "-m", "tests.e2e.netns", "target", "--bind", DC_ADDR]
        proc = await asyncio.to_thread(
            subprocess.Popen,
            net.exec_argv(net.dc, [*argv, "--flag", str(flag)]),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=REPO,
        )
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), STEP_TIMEOUT)
            if not line.strip().isdigit():
                raise RuntimeError(f"target did not start: {line!r}, see {log_file}")
            yield int(line)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            await asyncio.to_thread(proc.wait, STEP_TIMEOUT)


def agent_toml(net: SiteNetwork, broker_port: int, url: str, state_dir: Path) -> str:
    """The agent's own config, as a site would install it: the broker across the veth."""
    check = "\n".join(
        f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}" for k, v in CHECK.items()
    )
    return f"""\
[broker]
host = "{net.broker_addr}"
port = {broker_port}
# The minimum: paho gives up on a silent connection after about two of these.
keepalive = 5

[agent]
state_dir = "{state_dir}"
heartbeat_interval = 1
reconnect_max = 1

[partners.CCC]
name = "Cambridge City Council"

[sites.{SITE}]
partner = "CCC"

[[sites.{SITE}.checks]]
target = "{url}"
{check}
"""


@pytest.fixture
async def rig(net: SiteNetwork, tmp_path: Path) -> AsyncIterator[Rig]:
    flag = tmp_path / "target-failing"
    async with (
        target_in(net, flag, tmp_path / "target.log") as port,
        mosquitto(tmp_path / "mosquitto", listen_on=(net.broker_addr,)) as broker,
    ):
        url = f"http://{DC_ADDR}:{port}/"
        # The cut lasts seconds; a provisional "site unreachable" outage is not this test's
        # subject (tests/collector covers it), so the grace is well beyond the cut.
        cfg = estate(
            tmp_path,
            broker.port,
            [{**CHECK, "target": url}],
            site=SITE,
            extra={"collector": {"offline_grace": 600}},
        )
        agent_config = tmp_path / "agent.toml"
        agent_config.write_text(agent_toml(net, broker.port, url, cfg.agent.state_dir))
        collector = Collector(cfg)
        stop = asyncio.Event()
        task = asyncio.create_task(collector.run(stop), name="collector")
        store: Store | None = None
        rig: Rig | None = None
        try:
            await asyncio.wait_for(collector.connected.wait(), STEP_TIMEOUT)
            store = Store(cfg.collector.database)
            rig = Rig(net, tmp_path, broker, cfg, collector, store, agent_config, flag)
            yield rig
        finally:
            # Processes in the namespaces go first: a namespace outlives its deletion while
            # anything still runs in it.
            for run in rig.runs if rig else []:
                if run.proc.poll() is None:
                    os.kill(run.proc.pid, signal.SIGKILL)
                    await asyncio.to_thread(run.proc.wait, STEP_TIMEOUT)
            stop.set()
            await asyncio.wait_for(task, STEP_TIMEOUT)
            if store is not None:
                store.close()


def report(rig: Rig, title: str) -> dict[str, Any]:
    """Print the tally and check it adds up: every event sent was stored or rejected."""
    tally = rig.tally()
    print(
        f"\n{title}: events sent {tally['sent']}, delivered {tally['delivered']}, "
        f"duplicates ignored {tally['duplicates']}, rejected {tally['rejected'] or 'none'} "
        f"({tally['messages']} MQTT messages, {tally['heartbeats']} heartbeats)"
    )
    assert tally["delivered"] + sum(tally["rejected"].values()) == tally["sent"], tally
    return tally


async def start_and_settle(rig: Rig) -> tuple[AgentRun, Seen]:
    """Start the agent with a healthy target; return once unknown -> up is stored and acked."""
    run = rig.start_agent()
    first = await run.transition("unknown", "up")
    await run.delivered(seq_of(run.spooled()[0]))
    await rig.collector_has(run.spooled())
    return run, first


async def test_cut_link_outage_reaches_collector_after_restore(rig: Rig) -> None:
    run, first = await start_and_settle(rig)

    rig.net.cut()
    rig.fail_target()
    down = await run.transition("up", "down")
    rig.heal_target()
    up = await run.transition("down", "up")
    # Let the agent give up on its old connection (keepalive) so that the events can only
    # arrive by replay from the spool, not by TCP retransmission once the link is back.
    await run.count(LOST, 1, "the lost broker connection")
    assert rig.spool() == [("up", "down"), ("down", "up")]
    assert len(rig.stored()) == 1, "nothing crossed the cut link"

    rig.net.restore()
    await run.count(CONNECTED, 2, "a reconnection after the cut")
    await run.delivered(seq_of(run.spooled()[-1]))
    await rig.collector_has(run.spooled())
    assert await run.stop() == 0

    assert rig.spool() == []
    assert run.transitions() == [first, down, up]
    stored = rig.stored()
    assert [e["id"] for e in stored] == run.spooled()
    assert [Seen(e["from_state"], e["to_state"], e["at"]) for e in stored] == [first, down, up]
    assert rig.outages() == [("down", down.at, up.at, "agent")]
    tally = report(rig, "cut link")
    assert tally["sent"] == 3


@pytest.mark.parametrize("restart_while", ["failing", "healed"])
async def test_agent_killed_during_cut_loses_nothing(rig: Rig, restart_while: str) -> None:
    """``kill -9`` after the outage's start is spooled, restart before the link returns.

    A restarted agent's state machine starts from ``unknown``, so what the agent saw is:
    - failing: first life up -> down at T1; second life unknown -> down at T2 (first failed
      probe after the restart), then down -> up at T3. The collector keeps both lives' events
      and one outage, T1..T3: the restart's unknown -> down restates the open outage rather
      than starting another.
    - healed: first life up -> down at T1; the target recovers while the agent is dead; second
      life unknown -> up at T3. One outage, T1..T3: its start is still the first failed probe
      from before the kill, its end the first good probe the restarted agent saw.
    """
    first_run, first = await start_and_settle(rig)

    rig.net.cut()
    rig.fail_target()
    down = await first_run.transition("up", "down")
    await first_run.kill()
    assert rig.spool() == [("up", "down")]

    if restart_while == "healed":
        rig.heal_target()
    second_run = rig.start_agent()
    if restart_while == "failing":
        again = await second_run.transition("unknown", "down")
        rig.heal_target()
        up = await second_run.transition("down", "up")
        second_life = [again, up]
        expected_outages = [("down", down.at, up.at, "agent")]
    else:
        up = await second_run.transition("unknown", "up")
        second_life = [up]
        expected_outages = [("down", down.at, up.at, "agent")]
    assert first_run.transitions() == [first, down]
    assert second_run.transitions() == second_life
    assert rig.spool() == [(s.from_, s.to) for s in [down, *second_life]]
    assert len(rig.stored()) == 1, "nothing crossed the cut link"

    rig.net.restore()
    await second_run.count(CONNECTED, 1, "a connection once the link is back")
    sent = first_run.spooled() + second_run.spooled()
    await second_run.delivered(seq_of(sent[-1]))
    await rig.collector_has(sent)
    assert await second_run.stop() == 0

    assert rig.spool() == []
    stored = rig.stored()
    assert [e["id"] for e in stored] == sent
    assert [Seen(e["from_state"], e["to_state"], e["at"]) for e in stored] == [
        first,
        down,
        *second_life,
    ]
    assert rig.outages() == expected_outages
    report(rig, f"kill -9 during the cut, restarted while {restart_while}")
