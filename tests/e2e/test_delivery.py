"""Issue 8: nothing lost when the broker crashes, the collector's disk fills or turns
read-only, or one collector of a pair is away; a cut site is noticed fast.

Real Mosquitto, real ``availmon agent`` and ``availmon collector`` processes. Each agent
probes loopback HTTP targets that flip between healthy and failing on every request, so every
probe is a state change and the agents send a steady stream of events (tens per second).
At the end the targets settle, every spool empties (each event confirmed by the collectors
it needs) and each test prints one ``tally:`` line (sent, stored, lost, duplicated) from the
agents' spools and the collector's store: lost must be 0.

Subprocesses offer nothing to await, so they are polled (their SQLite files read-only,
``/healthz``, ``/metrics``) against bounded deadlines; no sleep synchronises anything. The
only sleep is the issue's fault schedule (a broker restarted every 8 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.e2e import procs
from tests.peers import Mosquitto, broker_user, estate_data, free_port

SITES = ("s1", "s2", "s3")
CHECKS = 2


class FlappingTarget:
    """Loopback HTTP paths that answer 200 and 503 in turn while ``flapping``, else 200."""

    def __init__(self) -> None:
        self.flapping = True
        self.port = 0
        self._hits: dict[str, int] = {}

    async def handler(self, request: web.Request) -> web.Response:
        n = self._hits[request.path] = self._hits.get(request.path, 0) + 1
        if self.flapping and n % 2:
            return web.Response(status=503, text="flapping for the test")
        return web.Response(text="ok")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"


@contextlib.asynccontextmanager
async def flapping_target() -> AsyncIterator[FlappingTarget]:
    target = FlappingTarget()
    app = web.Application()
    app.router.add_get("/{name}", target.handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    target.port = runner.addresses[0][1]
    try:
        yield target
    finally:
        await runner.cleanup()


@dataclass
class SlowSaveMosquitto(Mosquitto):
    """Mosquitto saving its persistence every 30 s, as a production broker might: a
    ``kill -9`` then loses what it queued since the last save (issue 8)."""

    def conf(self) -> Path:
        path = super().conf()
        path.write_text(path.read_text().replace("autosave_interval 1\n", "autosave_interval 30\n"))
        return path


@dataclass
class Rig:
    tmp: Path
    broker: Mosquitto
    target: FlappingTarget
    agents: dict[str, procs.Proc] = field(default_factory=dict)
    collectors: dict[str, procs.Proc] = field(default_factory=dict)
    web_ports: dict[str, int] = field(default_factory=dict)
    configs: dict[str, Path] = field(default_factory=dict)
    dbs: dict[str, Path] = field(default_factory=dict)

    def spool(self, site: str) -> Path:
        return self.tmp / "agents" / f"{site}.spool.db"

    def spooled(self) -> int:
        """Seqs the agents still hold (events and drops) awaiting confirmation."""
        total = 0
        for site in SITES:
            for table in ("events", "drops"):
                total += procs.count(self.spool(site), table)
        return total

    def assigned(self) -> dict[str, tuple[int, int, int]]:
        """Per agent: (first seq, last seq, dropped at the cap), from its spool."""
        out = {}
        for site in SITES:
            meta = dict(procs.query(self.spool(site), "SELECT key, value FROM meta"))
            if "first" in meta:  # else the agent has not made its spool yet
                out[site] = (int(meta["first"]), int(meta["seq"]), int(meta["dropped"]))
        return out

    def sent(self) -> int:
        return sum(last - first + 1 for first, last, _ in self.assigned().values())

    def stored(self, name: str = "c") -> int:
        return procs.count(self.dbs[name])

    async def healthz(self, name: str = "c") -> tuple[int, str] | None:
        return await procs.http_get(f"http://127.0.0.1:{self.web_ports[name]}/healthz")

    async def healthy(self, name: str = "c") -> None:
        await procs.wait_collector_ready(self.collectors[name], self.web_ports[name])

    async def metric(self, name: str, sample_name: str, **labels: str) -> float:
        return procs.sample(await procs.metrics(self.web_ports[name]), sample_name, **labels)

    async def progress(self, more: int, what: str = "traffic") -> None:
        """Wait until the agents have numbered ``more`` new events (the stream goes on)."""
        start = self.sent()
        await procs.poll_until(self.sent, lambda n: n >= start + more, what=f"{more} more {what}")

    async def settle(self, *names: str) -> dict[str, Any]:
        """Stop flapping, let every spool empty, and count: the tally of the run."""
        self.target.flapping = False
        names = names or tuple(self.collectors)
        for name in names:
            await self.healthy(name)

        def done() -> bool:
            return self.spooled() == 0 and all(self.stored(n) >= self.sent() for n in names)

        # Each check makes at most one more change (to up) after the flapping stops.
        await procs.poll_until(done, what="every spool confirmed empty", timeout=120)
        assigned = self.assigned()  # one snapshot: later events are not counted
        sent = sum(last - first + 1 for first, last, _ in assigned.values())
        dropped = sum(d for _, _, d in assigned.values())
        out: dict[str, Any] = {"sent": sent, "dropped_at_cap": dropped}
        for name in names:
            stored = self.distinct_stored(name, assigned)
            dup = int(await self.metric(name, "availmon_events_duplicate_total"))
            out[name] = {"stored": stored, "lost": sent - dropped - stored, "duplicated": dup}
        return out

    def distinct_stored(self, name: str, assigned: dict[str, tuple[int, int, int]]) -> int:
        total = 0
        for site, (first, last, _) in assigned.items():
            rows = procs.query(
                self.dbs[name],
                "SELECT count(DISTINCT seq) FROM events WHERE agent=? AND seq BETWEEN ? AND ?",
                site,
                first,
                last,
            )
            total += int(rows[0][0])
        return total


def show(name: str, tally: dict[str, Any], **more: Any) -> None:
    parts = [f"sent={tally['sent']}"]
    for key, value in tally.items():
        if isinstance(value, dict):
            parts.append(
                f"{key}: stored={value['stored']} lost={value['lost']}"
                f" duplicated={value['duplicated']}"
            )
    parts += [f"{k}={v}" for k, v in more.items()]
    print(f"tally {name}: " + " ".join(parts))


def checks(target: FlappingTarget, site: str) -> list[dict[str, Any]]:
    return [
        {
            "name": f"web{i}",
            "type": "http",
            "target": target.url(f"{site}-{i}"),
            "area": "internet_web",
            "interval": 0.1,
            "timeout": 0.1,
            "failures_to_down": 1,
            "successes_to_up": 1,
        }
        for i in range(CHECKS)
    ]


def write_configs(
    rig: Rig, members: tuple[str, ...] = ("c",), db_dir: Path | None = None, **agent: Any
) -> None:
    """One estate file per collector (its client id, database, web port); agents read the
    first."""
    sites = {s: {"partner": "CCC", "checks": checks(rig.target, s)} for s in SITES}
    for name in members:
        rig.web_ports[name] = free_port()
        rig.dbs[name] = (db_dir or rig.tmp) / f"{name}.db"
        collector: dict[str, Any] = {
            "client_id": name,
            "database": str(rig.dbs[name]),
            "gap_grace": 10,
        }
        if len(members) > 1:
            collector["members"] = list(members)
        data = estate_data(
            rig.tmp,
            rig.broker.port,
            [],
            extra={
                "sites": sites,
                "collector": collector,
                "web": {"port": rig.web_ports[name]},
                "agent": {
                    "state_dir": str(rig.tmp / "agents"),
                    "ack_timeout": 2,
                    "heartbeat_interval": 1,
                    "reconnect_max": 1,
                    **agent,
                },
            },
        )
        data["sites"] = sites
        rig.configs[name] = rig.tmp / f"estate-{name}.toml"
        procs.write_config(rig.configs[name], data)
        rig.collectors[name] = procs.collector(rig.configs[name], rig.tmp / f"{name}.log")
    first = rig.configs[members[0]]
    rig.agents = {s: procs.agent(first, s, rig.tmp / f"agent-{s}.log") for s in SITES}


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, broker: Mosquitto | None = None) -> AsyncIterator[Rig]:
    broker = broker or SlowSaveMosquitto(tmp_path / "mq", extra_conf=broker_user())
    await broker.start()
    try:
        async with flapping_target() as target:
            r = Rig(tmp_path, broker, target)
            try:
                yield r
            finally:
                for p in [*r.agents.values(), *r.collectors.values()]:
                    await p.stop()
    finally:
        await broker.stop()


async def kill9_broker(broker: Mosquitto) -> None:
    await broker.kill()
    await broker.start()  # from its persistence file, as an init system would


# -- 1. the broker killed with kill -9 three times ------------------------------------------


@pytest.mark.parametrize(
    "collector_up", [True, False], ids=["collector-connected", "collector-away"]
)
async def test_broker_killed_three_times(tmp_path: Path, collector_up: bool) -> None:
    """Mosquitto ``kill -9`` three times during steady traffic and restarted from its
    persistence (saved every 30 s, so each crash loses what it queued since), with the
    collector connected, and with it stopped (its session queued at the broker)."""
    async with rig(tmp_path) as r:
        write_configs(r)
        c = r.collectors["c"]
        c.start()
        await r.healthy()  # subscribed: the broker keeps a session for it from now on
        for a in r.agents.values():
            a.start()
        await r.progress(60)
        if not collector_up:
            await c.stop()
        for _ in range(3):
            await r.progress(60)
            await kill9_broker(r.broker)
        await r.progress(30)
        if not collector_up:
            c.start()
        tally = await r.settle()
    show(f"broker kill -9 x3, collector {'connected' if collector_up else 'away'}", tally)
    assert tally["c"]["lost"] == 0


# -- 2. the broker restarted every 8 s ------------------------------------------------------


async def test_broker_restarted_every_8_seconds(tmp_path: Path) -> None:
    """Seven restarts 8 s apart: the collector's reconnect back-off resets after each useful
    session, so it is back in every broker lifetime (measured: seconds to reconnect)."""
    async with rig(tmp_path) as r:
        write_configs(r)
        r.collectors["c"].start()
        await r.healthy()
        for a in r.agents.values():
            a.start()
        await r.progress(30)
        delays = []
        connects = [int(await r.metric("c", "availmon_mqtt_connects_total"))]
        for _ in range(7):
            await r.broker.restart()
            restarted = time.monotonic()
            # The new session, counted: /healthz alone can still show the old one for the
            # moment before the collector sees the broker go.
            await procs.poll_until(
                lambda: r.metric("c", "availmon_mqtt_connects_total"),
                lambda n, before=connects[-1]: n > before,
                what="the collector's next session",
            )
            await r.healthy()
            delays.append(round(time.monotonic() - restarted, 2))
            connects.append(int(await r.metric("c", "availmon_mqtt_connects_total")))
            # The fault schedule: the next restart comes 8 s after this one.
            await asyncio.sleep(max(0.0, 8 - (time.monotonic() - restarted)))
        tally = await r.settle()
    show("broker restarted every 8 s x7", tally, reconnect_seconds=delays)
    # Back within each broker lifetime: one more session per restart, never skipped.
    assert all(b == a + 1 for a, b in itertools.pairwise(connects)), connects
    assert tally["c"]["lost"] == 0


# -- 3 and 4. the collector's database: disk full, read-only --------------------------------

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="mounts a small tmpfs for the database (needs root)"
)


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Any:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True)


def fill(directory: Path) -> Path:
    """Write a filler file until the file system is full."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    with filler.open("wb") as f:
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    return filler


@needs_root
async def test_disk_full_under_the_collector(tmp_path: Path) -> None:
    """The database's file system fills during steady traffic: nothing is confirmed, the
    collector reports unhealthy and counts why; space freed, everything arrives."""
    with tmpfs(tmp_path / "db", "32m") as db_dir:
        async with rig(tmp_path) as r:
            write_configs(r, db_dir=db_dir)
            r.collectors["c"].start()
            await r.healthy()
            for a in r.agents.values():
                a.start()
            await r.progress(60)
            filler = fill(db_dir)
            await procs.poll_until(
                r.healthz, lambda h: h is not None and h[0] == 503, what="/healthz 503"
            )
            held_while_full = r.spooled()
            await r.progress(200, "events while the disk is full")
            errors = await r.metric("c", "availmon_store_errors_total", reason="disk_full")
            held_while_full = max(held_while_full, r.spooled())
            filler.unlink()
            tally = await r.settle()
    show("disk full then freed", tally, disk_full_errors=int(errors), held=held_while_full)
    assert errors >= 1
    assert held_while_full >= 200
    assert tally["c"]["lost"] == 0


@needs_root
async def test_database_read_only_then_writable(tmp_path: Path) -> None:
    """The collector restarted while its database's file system is read-only: it starts,
    reports unhealthy (``store_error``), subscribes to nothing, and the agents' spools and
    the broker keep the stream; made writable again, it drains everything."""
    with tmpfs(tmp_path / "db", "64m") as db_dir:
        async with rig(tmp_path) as r:
            write_configs(r, db_dir=db_dir)
            c = r.collectors["c"]
            c.start()
            await r.healthy()
            for a in r.agents.values():
                a.start()
            await r.progress(60)
            await c.stop()
            remount(db_dir, "ro")
            c.start()
            health = await procs.poll_until(
                r.healthz,
                lambda h: h is not None and h[0] == 503 and '"store_error": null' not in h[1],
                what="/healthz 503 with a store error",
                alive=c,
            )
            await r.progress(200, "events while read-only")
            held = r.spooled()
            remount(db_dir, "rw")
            tally = await r.settle()
    show("database read-only then writable", tally, held_while_read_only=held)
    assert health[0] == 503
    assert held >= 200
    assert tally["c"]["lost"] == 0


# -- 5. a collector pair, one of them away --------------------------------------------------


async def test_one_of_two_collectors_away_catches_up_identically(tmp_path: Path) -> None:
    """Collectors a and b, both confirming (the default). b is down for the whole run: the
    agents' spools hold every event for it (their heartbeats say so, the board shows it);
    b then starts, and ends with a store identical to a's."""
    async with rig(tmp_path) as r:
        write_configs(r, members=("a", "b"))
        r.collectors["a"].start()
        await r.healthy("a")
        for p in r.agents.values():
            p.start()
        await r.progress(300)
        status = await procs.http_get(f"http://127.0.0.1:{r.web_ports['a']}/api/v1/status")
        held = r.spooled()
        stored_a = r.stored("a")
        r.target.flapping = False
        r.collectors["b"].start()
        tally = await r.settle("a", "b")
    rows = {
        n: procs.query(
            r.dbs[n],
            "SELECT id, site, check_name, from_state, to_state, at FROM events ORDER BY id",
        )
        for n in ("a", "b")
    }
    outages = {
        n: procs.query(r.dbs[n], "SELECT id, state, start, end FROM outages ORDER BY id")
        for n in ("a", "b")
    }
    show("collector b away, then back", tally, held_for_b=held)
    assert status is not None
    assert '"b":' in status[1]
    assert held >= stored_a  # nothing was deleted on a's word alone
    assert tally["a"]["lost"] == tally["b"]["lost"] == 0
    assert [tuple(x) for x in rows["a"]] == [tuple(x) for x in rows["b"]]
    assert [tuple(x) for x in outages["a"]] == [tuple(x) for x in outages["b"]]


async def test_pair_hands_alerts_over_and_back(tmp_path: Path) -> None:
    """Exactly one of a pair leads (sends alerts): a, first in collector.members. kill -9 of
    a: its last will makes b lead; a back: a leads again and b gives way."""
    async with rig(tmp_path) as r:
        write_configs(r, members=("a", "b"))
        for n in ("a", "b"):
            r.collectors[n].start()
            await r.healthy(n)

        async def leaders() -> tuple[float, float]:
            return (
                await r.metric("a", "availmon_collector_leader")
                if r.collectors["a"].running()
                else -1.0,
                await r.metric("b", "availmon_collector_leader"),
            )

        both = await procs.poll_until(leaders, lambda v: v == (1.0, 0.0), what="a leads")
        await r.collectors["a"].kill9()
        took_over = await procs.poll_until(leaders, lambda v: v == (-1.0, 1.0), what="b leads")
        r.collectors["a"].start()
        await r.healthy("a")
        back = await procs.poll_until(leaders, lambda v: v == (1.0, 0.0), what="a leads again")
    print(f"tally pair leadership: start={both} a killed={took_over} a back={back}")
    assert (both, took_over, back) == ((1.0, 0.0), (-1.0, 1.0), (1.0, 0.0))


# -- 6. a cut site is noticed after two missed heartbeats ------------------------------------


async def test_silent_agent_is_offline_before_the_broker_notices(tmp_path: Path) -> None:
    """An agent frozen (SIGSTOP: its TCP connection stays open, as with a cut link whose
    packets vanish) sends no heartbeat; the collector marks it offline after two missed
    heartbeats (and a margin), long before the broker's keepalive (45 s) fires its last
    will. Thawed, its next heartbeat brings it back."""
    async with rig(tmp_path) as r:
        write_configs(r)
        r.collectors["c"].start()
        await r.healthy()
        for a in r.agents.values():
            a.start()

        async def online() -> float:
            return await r.metric("c", "availmon_agent_online", site="s1", agent="s1")

        await procs.poll_until(online, lambda v: v == 1.0, what="s1 online")
        victim = r.agents["s1"]
        os.kill(victim.pid, signal.SIGSTOP)
        frozen = time.monotonic()
        try:
            await procs.poll_until(online, lambda v: v == 0.0, what="s1 offline", timeout=40)
            noticed = time.monotonic() - frozen
            log = r.collectors["c"].text()
        finally:
            os.kill(victim.pid, signal.SIGCONT)
        await procs.poll_until(online, lambda v: v == 1.0, what="s1 back online")
        tally = await r.settle()
    show("agent silent", tally, offline_after_seconds=round(noticed, 1))
    assert "agent s1 (site s1): no heartbeat for over 7 s: offline" in log
    assert tally["c"]["lost"] == 0
