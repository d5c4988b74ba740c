"""``availmon demo``: the whole system in one process on the embedded defaults.

An amqtt broker, the collector with its web page, and one agent per site of
``config/demo.toml``, probing targets that the demo itself serves on 127.0.0.1. One of
them fails on a schedule (down from 30 s to 150 s of every 5 minutes, counted from the
demo's start) and one is slow for a minute in every five, so that outages open and close
within minutes of ``make demo``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from agent.main import Agent
from availmon.config import Estate, load_config
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


def demo_targets(clock: Callable[[], float]) -> web.Application:
    """Targets whose health follows the demo clock (seconds since start)."""

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
            await asyncio.sleep(SLOW_DELAY)  # the demo server being slow, on purpose
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


def with_state_dir(estate: Estate, state_dir: Path) -> Estate:
    return estate.model_copy(
        update={
            "agent": estate.agent.model_copy(update={"state_dir": state_dir / "agents"}),
            "collector": estate.collector.model_copy(
                update={"database": state_dir / "collector.db"}
            ),
        }
    )


async def run_demo(estate: Estate, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with serve(demo_targets(lambda: loop.time() - started), "127.0.0.1", DEMO_TARGET_PORT):
        collector = Collector(estate)
        agents = [Agent(estate, site) for site in estate.sites]
        async with asyncio.TaskGroup() as tg:
            tg.create_task(collector.run(stop), name="collector")
            await collector.connected.wait()
            for agent in agents:
                tg.create_task(agent.run(stop), name=f"agent:{agent.site}")
            web_ = estate.web
            print(
                f"\navailmon demo is running ({len(agents)} agents, "
                f"{sum(len(s.checks) for s in estate.sites.values())} checks).\n"
                f"  board        http://{web_.listen}:{collector.web_port}/"
                f"   (wall screen: /?wall)\n"
                f"  status JSON  http://{web_.listen}:{collector.web_port}/api/v1/status\n"
                f"  metrics      http://{web_.listen}:{collector.web_port}/metrics\n"
                f"  state        {estate.collector.database.parent}\n"
                f"The 'webmail' check fails 30 s after start for 2 minutes in every 5;\n"
                f"'intranet' is slow (degraded) from 3 to 4 minutes in every 5. Ctrl-C stops.\n",
                flush=True,
            )


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="run broker, collector and agents in one process")
    p.add_argument("--config", default=str(default_config()), help="(config/demo.toml)")
    p.add_argument(
        "--state-dir", default="state/demo", help="where the database and spools live (state/demo)"
    )
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir).resolve()
    estate = with_state_dir(load_config(args.config), state_dir)
    return asyncio.run(_demo(estate, state_dir))


async def _demo(estate: Estate, state_dir: Path) -> int:
    stop = asyncio.Event()
    remove = install_stop_handlers(stop)
    try:
        await run_demo(estate, stop)
    except OSError as exc:
        print(f"availmon demo: {exc} (is another demo running?)", file=sys.stderr)
        return 1
    finally:
        remove()
    print("availmon demo stopped; state kept in", state_dir)
    return 0
