"""``availmon demo``: the whole system in one process on the embedded defaults.

An amqtt broker, the collector with its web page, and one agent per site of
``config/demo.toml``, probing targets that the demo itself serves on 127.0.0.1. One of
them fails on a schedule (down from 30 s to 150 s of every 5 minutes, counted from the
demo's start) and one is slow for a minute in every five, so that outages open and close
within minutes of ``make demo``.

``--speed N`` runs the whole demo N times faster: the schedule, and with it every check's
interval, timeout and latency threshold, the heartbeat and the offline grace (at 10, webmail
fails 3 s after start for 12 s in every 30). ``--web-port``, ``--broker-port`` and
``--target-port`` move it off its usual ports, so two demos (or a test) can run side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from agent.main import Agent
from availmon.config import Check, Estate, load_config
from availmon.errors import AvailmonError
from availmon.signals import install_stop_handlers
from collector.main import Collector

log = logging.getLogger(__name__)

DEMO_TARGET_PORT = 18080
CYCLE = 300.0
FLAKY_DOWN = (30.0, 150.0)  # seconds into each cycle
SLOW_WINDOW = (180.0, 240.0)
SLOW_DELAY = 1.5  # seconds; demo.toml's degraded_latency is below this


def default_config() -> Path:
    return Path(__file__).resolve().parent.parent / "config" / "demo.toml"


def demo_targets(clock: Callable[[], float], speed: float = 1.0) -> web.Application:
    """Targets whose health follows the demo clock (demo seconds since start: real seconds
    times ``speed``)."""

    def phase() -> float:
        return clock() % CYCLE

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def flaky(_: web.Request) -> web.Response:
        if FLAKY_DOWN[0] <= phase() < FLAKY_DOWN[1]:
            return web.Response(status=503, text="scheduled demo outage\n")
        return web.Response(text="ok\n")

    async def slow(_: web.Request) -> web.Response:
        if SLOW_WINDOW[0] <= phase() < SLOW_WINDOW[1]:
            await asyncio.sleep(SLOW_DELAY / speed)  # the demo server being slow, on purpose
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/flaky", flaky)
    app.router.add_get("/slow", slow)
    return app


@asynccontextmanager
async def serve(app: web.Application, host: str, port: int) -> AsyncIterator[int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def scaled(estate: Estate, speed: float) -> Estate:
    """The estate ``speed`` times faster: each check's interval, timeout, degraded latency and
    (ICMP) echo spacing, the agents' heartbeat and the collector's offline grace."""
    if speed == 1:
        return estate

    def faster(check: Check) -> Check:
        update: dict[str, Any] = {
            "interval": check.interval / speed,
            "timeout": check.timeout / speed,
        }
        if check.degraded_latency is not None:
            update["degraded_latency"] = check.degraded_latency / speed
        if check.type == "icmp":
            echo = float(check.parsed_options().echo_interval)
            update["options"] = {**check.options, "echo_interval": max(0.01, echo / speed)}
        return check.model_copy(update=update)

    sites = {
        sid: site.model_copy(update={"checks": [faster(c) for c in site.checks]})
        for sid, site in estate.sites.items()
    }
    return estate.model_copy(
        update={
            "sites": sites,
            "agent": estate.agent.model_copy(
                update={"heartbeat_interval": estate.agent.heartbeat_interval / speed}
            ),
            "collector": estate.collector.model_copy(
                update={"offline_grace": estate.collector.offline_grace / speed}
            ),
        }
    )


def on_ports(
    estate: Estate,
    *,
    broker: int | None = None,
    web_port: int | None = None,
    targets: int | None = None,
) -> Estate:
    """The estate with the demo's broker, web page or targets on other ports (None: as
    configured). Checks aimed at the demo's own targets follow them to ``targets``."""
    update: dict[str, Any] = {}
    if broker is not None:
        update["broker"] = estate.broker.model_copy(update={"port": broker})
    if web_port is not None:
        update["web"] = estate.web.model_copy(update={"port": web_port})
    if targets is not None and targets != DEMO_TARGET_PORT:
        ours, moved = f"127.0.0.1:{DEMO_TARGET_PORT}", f"127.0.0.1:{targets}"
        update["sites"] = {
            sid: site.model_copy(
                update={
                    "checks": [
                        c.model_copy(update={"target": c.target.replace(ours, moved)})
                        for c in site.checks
                    ]
                }
            )
            for sid, site in estate.sites.items()
        }
    return estate.model_copy(update=update)


def _span(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds:g} s"


def schedule_text(speed: float) -> str:
    """The banner's account of the schedule, in real time at this speed."""
    fail_at, fail_for = FLAKY_DOWN[0] / speed, (FLAKY_DOWN[1] - FLAKY_DOWN[0]) / speed
    slow_from, slow_to, cycle = SLOW_WINDOW[0] / speed, SLOW_WINDOW[1] / speed, CYCLE / speed
    return (
        f"The 'webmail' check fails {_span(fail_at)} after start for {_span(fail_for)} in "
        f"every {_span(cycle)};\n'intranet' is slow (degraded) from {_span(slow_from)} to "
        f"{_span(slow_to)} into every {_span(cycle)}."
    )


def with_state_dir(estate: Estate, state_dir: Path) -> Estate:
    return estate.model_copy(
        update={
            "agent": estate.agent.model_copy(update={"state_dir": state_dir / "agents"}),
            "collector": estate.collector.model_copy(
                update={"database": state_dir / "collector.db"}
            ),
        }
    )


async def run_demo(
    estate: Estate,
    stop: asyncio.Event,
    *,
    speed: float = 1.0,
    target_port: int = DEMO_TARGET_PORT,
) -> None:
    """``estate`` is already ``scaled`` and ``on_ports``; ``speed`` drives the schedule."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    targets = demo_targets(lambda: (loop.time() - started) * speed, speed)
    async with serve(targets, "127.0.0.1", target_port):
        collector = Collector(estate)
        agents = [Agent(estate, site) for site in estate.sites]
        # The collector owns the embedded broker, so it stops last: the agents say "stopped"
        # on their way out while the broker can still take it.
        collector_stop = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(collector.run(collector_stop), name="collector")
            ready = [
                tg.create_task(collector.connected.wait(), name="connected"),
                tg.create_task(stop.wait(), name="stop"),
            ]
            await asyncio.wait(ready, return_when=asyncio.FIRST_COMPLETED)
            for task in ready:
                task.cancel()
            if not stop.is_set():
                # One stop per agent, set one after another: each says "stopped" on a new
                # connection, and the embedded broker (amqtt 0.12) can crash on several
                # connections arriving at once ("dictionary changed size during iteration").
                stops = [asyncio.Event() for _ in agents]
                agent_tasks = [
                    tg.create_task(agent.run(own), name=f"agent:{agent.site}")
                    for agent, own in zip(agents, stops, strict=True)
                ]
                _banner(estate, collector, len(agents), speed)
                await stop.wait()
                for own, agent_task in zip(stops, agent_tasks, strict=True):
                    own.set()
                    await agent_task
            collector_stop.set()


def _banner(estate: Estate, collector: Collector, agents: int, speed: float) -> None:
    web_ = estate.web
    base = f"http://{web_.listen}:{collector.web_port}"
    pace = f", {speed:g} times faster" if speed != 1 else ""
    print(
        f"\navailmon demo is running ({agents} agents, "
        f"{sum(len(s.checks) for s in estate.sites.values())} checks{pace}).\n"
        f"  board        {base}/   (wall screen: /?wall)\n"
        f"  status JSON  {base}/api/v1/status\n"
        f"  metrics      {base}/metrics\n"
        f"  state        {estate.collector.database.parent}\n"
        f"{schedule_text(speed)} Ctrl-C stops.\n",
        flush=True,
    )


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="run broker, collector and agents in one process")
    p.add_argument("--config", default=str(default_config()), help="(config/demo.toml)")
    p.add_argument(
        "--state-dir", default="state/demo", help="where the database and spools live (state/demo)"
    )
    p.add_argument(
        "--speed",
        type=_speed,
        default=1.0,
        metavar="N",
        help="run the schedule and every check N times faster (1; 10 shows a whole cycle in 30 s)",
    )
    p.add_argument(
        "--web-port", type=_web_port, help="status page and API port (config; 0: any free)"
    )
    p.add_argument("--broker-port", type=_port, help="embedded MQTT broker port (config)")
    p.add_argument(
        "--target-port", type=_port, help=f"port of the demo's own targets ({DEMO_TARGET_PORT})"
    )
    p.set_defaults(func=cmd_demo)


def _speed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError(f"expected a speed above 0 and at most 100, got {text}")
    return value


def _port(text: str, lowest: int = 1) -> int:
    if not text.isdigit() or not lowest <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port {lowest}-65535, got {text!r}")
    return int(text)


def _web_port(text: str) -> int:
    return _port(text, lowest=0)


def cmd_demo(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir).resolve()
    estate = with_state_dir(load_config(args.config), state_dir)
    estate = on_ports(
        scaled(estate, args.speed),
        broker=args.broker_port,
        web_port=args.web_port,
        targets=args.target_port,
    )
    target_port = DEMO_TARGET_PORT if args.target_port is None else args.target_port
    return asyncio.run(_demo(estate, state_dir, speed=args.speed, target_port=target_port))


async def _demo(
    estate: Estate, state_dir: Path, *, speed: float = 1.0, target_port: int = DEMO_TARGET_PORT
) -> int:
    stop = asyncio.Event()
    remove = install_stop_handlers(stop)
    try:
        await run_demo(estate, stop, speed=speed, target_port=target_port)
    except (OSError, ExceptionGroup) as exc:
        in_use = _address_in_use(exc)
        if in_use is None:
            failure = _availmon_error(exc)
            if failure is not None:  # e.g. an agent that cannot ping: its own message
                raise failure from None
            raise
        print(f"availmon demo: {in_use} (is another demo running?)", file=sys.stderr)
        return 1
    finally:
        remove()
    print("availmon demo stopped; state kept in", state_dir)
    return 0


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc``, what it groups and what caused each, depth first."""
    out: list[BaseException] = []
    todo = [exc]
    while todo:
        e = todo.pop()
        out.append(e)
        if isinstance(e, BaseExceptionGroup):
            todo.extend(reversed(e.exceptions))
        if e.__cause__ is not None:
            todo.append(e.__cause__)
    return out


def _address_in_use(exc: BaseException) -> OSError | None:
    """The "address already in use" behind a failed start (the embedded broker wraps it)."""
    for e in _causes(exc):
        if isinstance(e, OSError) and e.errno == errno.EADDRINUSE:
            return e
    return None


def _availmon_error(exc: BaseException) -> AvailmonError | None:
    for e in _causes(exc):
        if isinstance(e, AvailmonError):
            return e
    return None
