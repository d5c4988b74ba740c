"""Real peers the tests start: Mosquitto, the embedded amqtt broker, an HTTP target.

Readiness is taken from the peer itself (Mosquitto's own "running" log line, a bound
socket), never from a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from availmon.config import Estate, parse_config
from availmon.embedded import embedded_broker
from availmon.schema import Event, topic

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


@functools.cache
def netns_unavailable() -> str | None:
    """Why tests that build network namespaces cannot run here, or None when they can.

    Probed by adding and deleting a namespace: ``ip netns list`` succeeds where ``ip netns
    add`` is refused (root in an unprivileged container), so listing proves nothing."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    name = f"avm-probe-{secrets.token_hex(4)}"
    added = subprocess.run(
        ["ip", "netns", "add", name], capture_output=True, text=True, timeout=30, check=False
    )
    if added.returncode != 0:
        return f"cannot create a network namespace: {added.stderr.strip()}"
    deleted = subprocess.run(
        ["ip", "netns", "delete", name], capture_output=True, text=True, timeout=30, check=False
    )
    if deleted.returncode != 0:
        return f"cannot delete a network namespace: {deleted.stderr.strip()}"
    return None


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Mosquitto:
    """A Mosquitto process on a loopback port, with persistence, that tests may kill."""

    workdir: Path
    port: int = field(default_factory=free_port)
    extra_conf: str = ""
    proc: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"
    #: More addresses to listen on, same port (a test namespace's veth end); loopback stays.
    listen_on: tuple[str, ...] = ()

    def conf(self) -> Path:
        path = self.workdir / "mosquitto.conf"
        extra_listeners = "".join(f"listener {self.port} {addr}\n" for addr in self.listen_on)
        path.write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"{extra_listeners}"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            "autosave_interval 1\n"
            "log_dest stderr\n"  # unbuffered: its "running" line is our readiness signal
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            # A persistent session must keep a collector's whole backlog (as `availmon
            # broker` renders it).
            "max_queued_messages 0\n"
            "max_queued_bytes 0\n"
            # As root, Mosquitto would drop to its own user, which cannot write persistence
            # in a root-owned temporary directory (and says so only on stderr).
            f"{'' if 'user ' in self.extra_conf else broker_user()}\n"
            f"{self.extra_conf}\n"
        )
        return path

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = await asyncio.to_thread(
            subprocess.Popen,
            [MOSQUITTO, "-c", str(self.conf())],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        await asyncio.wait_for(asyncio.to_thread(self._await_running), 20)

    def _await_running(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        seen = []
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace")
            seen.append(line)
            if "running" in line:
                # Keep draining its output so a chatty broker never blocks on a full pipe.
                threading_drain(self.proc.stdout)
                return
        raise RuntimeError("mosquitto exited before it was running:\n" + "".join(seen))

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)
        await asyncio.to_thread(self.proc.wait, 20)
        self.proc = None

    async def kill(self) -> None:
        await self.stop(signal.SIGKILL)

    async def restart(self) -> None:
        await self.stop()
        await self.start()


@dataclass
class MosquittoFromFile(Mosquitto):
    """A Mosquitto started from a configuration written elsewhere (``availmon broker``).

    ``port`` is where tests connect; the file must log to stderr, whose "running" line is the
    readiness signal, like the generated one.
    """

    conf_file: Path = Path("mosquitto.conf")

    def conf(self) -> Path:
        return self.conf_file


@contextlib.asynccontextmanager
async def mosquitto_from(conf_file: Path, port: int) -> AsyncIterator[Mosquitto]:
    broker = MosquittoFromFile(conf_file.parent, port=port, conf_file=conf_file)
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


def broker_user() -> str:
    """A ``user`` line that keeps Mosquitto running as the test's own user.

    Started as root, Mosquitto drops to the ``mosquitto`` user, which cannot write its
    persistence file in a root-owned temporary directory: it then keeps no queued message
    across a restart and says so only on its (drained) stderr. Run as anyone else, Mosquitto
    ignores the line. Pass it as ``extra_conf`` to any test that restarts the broker.
    """
    return f"user {pwd.getpwuid(os.geteuid()).pw_name}"


def threading_drain(stream: Any) -> None:
    import threading

    def drain() -> None:
        for _ in stream:
            pass

    threading.Thread(target=drain, daemon=True).start()


@contextlib.asynccontextmanager
async def mosquitto(
    workdir: Path, extra_conf: str = "", *, listen_on: tuple[str, ...] = ()
) -> AsyncIterator[Mosquitto]:
    broker = Mosquitto(workdir, extra_conf=extra_conf, listen_on=listen_on)
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


@dataclass
class Amqtt:
    port: int
    host: str = "127.0.0.1"


@contextlib.asynccontextmanager
async def amqtt_broker() -> AsyncIterator[Amqtt]:
    port = free_port()
    async with embedded_broker("127.0.0.1", port):
        yield Amqtt(port)


@dataclass
class HttpTarget:
    """A loopback web server whose health the test switches."""

    healthy: bool = True
    port: int = 0
    hits: int = 0

    def app(self) -> web.Application:
        async def handler(_: web.Request) -> web.Response:
            self.hits += 1
            if self.healthy:
                return web.Response(text="ok")
            return web.Response(status=503, text="down for the test")

        app = web.Application()
        app.router.add_get("/", handler)
        return app

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


@contextlib.asynccontextmanager
async def http_target() -> AsyncIterator[HttpTarget]:
    target = HttpTarget()
    runner = web.AppRunner(target.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    target.port = runner.addresses[0][1]
    try:
        yield target
    finally:
        await runner.cleanup()


def estate(
    tmp: Path,
    broker_port: int,
    checks: list[dict[str, Any]],
    *,
    site: str = "hq",
    extra: dict[str, Any] | None = None,
) -> Estate:
    """A one-site estate for tests, with its state under ``tmp``."""
    return parse_config(estate_data(tmp, broker_port, checks, site=site, extra=extra), "test")


def estate_data(
    tmp: Path,
    broker_port: int,
    checks: list[dict[str, Any]],
    *,
    site: str = "hq",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The raw data behind ``estate``, for tests that write it to a TOML file for a
    subprocess (``tests.e2e.procs.write_config``)."""
    data: dict[str, Any] = {
        "broker": {"host": "127.0.0.1", "port": broker_port},
        "agent": {"state_dir": str(tmp / "agent"), "heartbeat_interval": 1, "reconnect_max": 1},
        "collector": {"database": str(tmp / "collector.db")},
        "web": {"listen": "127.0.0.1", "port": 0},
        "partners": {"CCC": {"name": "Cambridge City Council"}},
        "sites": {site: {"partner": "CCC", "checks": checks}},
    }
    for key, value in (extra or {}).items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return data


async def wait_until(
    condition: asyncio.Condition, predicate: Callable[[], bool], timeout: float = 60.0
) -> None:
    """Wait for a state the collector announces; the timeout only guards a hung test."""
    async with condition:
        await asyncio.wait_for(condition.wait_for(predicate), timeout)


def write_secret(path: Path, text: str) -> Path:
    """A secret file as an operator should leave it: mode 0600 (availmon warns otherwise)."""
    path.write_text(text)
    path.chmod(0o600)
    return path


def web_check(url: str, **over: Any) -> dict[str, Any]:
    """The fast-probing http check most end-to-end tests watch (0.2 s interval, 3 to go
    down, 2 to come back); ``over`` changes any key."""
    return {
        "name": "web",
        "type": "http",
        "target": url,
        "area": "internet_web",
        "interval": 0.2,
        "timeout": 0.2,
        "failures_to_down": 3,
        "successes_to_up": 2,
        **over,
    }


# -- events on the wire, made by hand ---------------------------------------------------------
# The one place that knows how events travel (topic and payload): a test that publishes events
# itself, acting as an agent, or hands them to ``Collector.handle_batch``, goes through this,
# so a change of wire format is one edit here.


def event_messages(site: str, agent: str, events: Sequence[Event]) -> list[tuple[str, bytes]]:
    """The MQTT messages (topic, payload) that carry ``events`` from ``site``'s ``agent``."""
    where = topic(site, agent, "event")
    return [(where, e.to_json()) for e in events]


@dataclass
class LostBroker:
    """Stand-in sessions for an MQTT loop (its ``_session``) whose broker is lost over and
    over. The first ``failures`` fail as the real session's task group does when one of its
    tasks fails on the lost broker: the failure comes out (and Python 3.11 leaves the
    group's own cancellation of its caller counted). The next runs until cancelled, then
    raises the failure too, as the real one does when a stop comes while it winds down. A
    real broker loss cannot be timed to those moments."""

    failures: int = 2
    sessions: int = 0
    running: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self) -> None:
        from availmon.mqtt import aiomqtt  # as the agent imports it (see availmon.mqtt)

        self.sessions += 1
        if self.sessions > self.failures:
            self.running.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                raise aiomqtt.MqttError("lost") from None
        started = asyncio.Event()

        async def lost() -> None:
            await started.wait()
            raise aiomqtt.MqttError("lost")

        async def winding_down() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                await asyncio.sleep(0)

        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(lost())
                tg.create_task(winding_down())
                started.set()
        except BaseExceptionGroup as group:
            raise group.exceptions[0] from None
