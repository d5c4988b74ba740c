"""Issue 13: SIGHUP reloads the config of a running agent and collector.

Real Mosquitto, real ``availmon agent`` and ``availmon collector`` processes (the venv's
console script) and a loopback HTTP target that counts the probes of each check by path. The
tests rewrite the config file, send SIGHUP by PID and watch what the processes expose: the
target's hits, the agent's spool (read-only), the broker (the agent's retained status topic:
a new MQTT session would publish ``online`` again), and the collector's ``/api/v1/status``,
``/metrics`` and database. Every wait is a poll against a deadline (``procs.poll_until``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
from aiohttp import web

from availmon.config import load_config
from availmon.schema import topic
from tests.alert_peers import hook_receiver
from tests.conftest import CANARY
from tests.e2e import procs
from tests.peers import estate_data, free_port, mosquitto, web_check, write_secret


class CountingTarget:
    """Loopback HTTP that counts the requests per path and answers 200, or 503 on the paths
    in ``failing``."""

    def __init__(self) -> None:
        self.port = 0
        self.hits: Counter[str] = Counter()
        self.failing: set[str] = set()

    async def handler(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.hits[name] += 1
        if name in self.failing:
            return web.Response(status=503, text="failing for the test")
        return web.Response(text="ok")

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


@contextlib.asynccontextmanager
async def counting_target() -> AsyncIterator[CountingTarget]:
    target = CountingTarget()
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


class StatusWatch:
    """Every payload the broker delivers on the agent's status topic (retained ``online``
    first): each MQTT session the agent opens publishes ``online`` once more."""

    def __init__(self, port: int, status_topic: str) -> None:
        self.port, self.topic = port, status_topic
        self.seen: list[bytes] = []

    async def run(self) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port, identifier="reload-watch") as client:
            await client.subscribe(self.topic, qos=1)
            async for message in client.messages:
                self.seen.append(bytes(message.payload))  # type: ignore[arg-type]


def config(
    tmp: Path,
    broker_port: int,
    web_port: int,
    checks: list[dict[str, Any]],
    **extra: dict[str, Any],
) -> Path:
    path = tmp / "estate.toml"
    web_cfg = {"port": web_port, **extra.pop("web", {})}
    procs.write_config(path, estate_data(tmp, broker_port, checks, extra={"web": web_cfg, **extra}))
    return path


def hup(proc: procs.Proc) -> None:
    os.kill(proc.pid, signal.SIGHUP)


async def log_lines(proc: procs.Proc, text: str, n: int) -> None:
    await procs.poll_until(
        lambda: proc.text().count(text), lambda c: c >= n, what=f"{n}x {text!r}", alive=proc
    )


async def get(url: str, token: str | None = None) -> tuple[int, str] | None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(url, headers=headers) as resp,
        ):
            return resp.status, await resp.text()
    except (aiohttp.ClientError, TimeoutError):
        return None


async def status(port: int, token: str | None = None) -> dict[str, str]:
    got = await get(f"http://127.0.0.1:{port}/api/v1/status", token)
    if got is None or got[0] != 200:
        return {}

    return {c["check"]: c["state"] for c in json.loads(got[1])["checks"]}


async def maintenance(port: int) -> list[str]:
    got = await get(f"http://127.0.0.1:{port}/api/v1/maintenance")
    assert got is not None
    assert got[0] == 200
    return sorted({w["reason"] for w in json.loads(got[1])["windows"]})


async def test_agent_reload_keeps_state_spool_and_session(tmp_path: Path) -> None:
    async with counting_target() as target, mosquitto(tmp_path / "mqtt") as broker:
        web_port = free_port()
        keep = web_check(target.url("keep"), name="keep")
        drop = web_check(target.url("drop"), name="drop")
        path = config(tmp_path, broker.port, web_port, [keep, drop])
        estate = load_config(path)
        agent_id = estate.agent_id("hq")
        spool = tmp_path / "agent" / f"{agent_id}.spool.db"
        watch = StatusWatch(broker.port, topic("hq", agent_id, "status"))
        agent = procs.agent(path, "hq", tmp_path / "agent.log")
        async with asyncio.TaskGroup() as tg:
            watcher = tg.create_task(watch.run())
            async with procs.running(agent):
                # No collector yet: the agent's events stay in its spool, unconfirmed.
                await procs.poll_until(
                    lambda: {r[0] for r in procs.query(spool, "SELECT check_name FROM events")},
                    lambda names: names == {"keep", "drop"},
                    what="both checks' up events in the spool",
                    alive=agent,
                )
                await procs.poll_until(lambda: watch.seen, lambda s: s == [b"online"])
                spooled = procs.query(spool, "SELECT seq, check_name, to_state FROM events")
                assert [r["to_state"] for r in spooled] == ["up", "up"]

                # keep unchanged, drop removed, new added.
                new = web_check(target.url("new"), name="new")
                config(tmp_path, broker.port, web_port, [keep, new])
                hup(agent)
                await log_lines(agent, "config reload ok", 1)
                assert "added new, changed none, removed drop" in agent.text()

                # The new check runs and reports; the removed one stops.
                await procs.poll_until(lambda: target.hits["new"], lambda n: n >= 1)
                drop_hits = target.hits["drop"]
                keep_hits = target.hits["keep"]
                await procs.poll_until(
                    lambda: {r[0] for r in procs.query(spool, "SELECT check_name FROM events")},
                    lambda names: "new" in names,
                    what="the new check's event in the spool",
                    alive=agent,
                )
                await procs.poll_until(lambda: target.hits["keep"], lambda n: n >= keep_hits + 3)
                assert target.hits["drop"] == drop_hits

                # keep kept its state: probed again and again, no second "up" event; the
                # spool still holds every event it held, and the MQTT session is the same.
                rows = procs.query(spool, "SELECT seq, check_name, to_state FROM events")
                assert [tuple(r) for r in spooled] == [tuple(r) for r in rows[: len(spooled)]]
                assert [r["check_name"] for r in rows].count("keep") == 1
                assert watch.seen == [b"online"]

                # A bad config is refused, named, and the running one stays.
                path.write_text(path.read_text() + "\n[sites.hq.checks.oops]\n")
                hup(agent)
                await log_lines(agent, "config reload failed", 1)
                assert f"config reload refused: {path}: sites.hq.checks" in agent.text()
                new_hits = target.hits["new"]
                await procs.poll_until(lambda: target.hits["new"], lambda n: n >= new_hits + 2)
                assert agent.running()
                # So is one that changes what only a restart applies (the broker).
                config(tmp_path, broker.port + 1, web_port, [keep, new])
                hup(agent)
                await log_lines(agent, "config reload failed", 2)
                assert f"broker.port: {broker.port} -> {broker.port + 1} needs a restart" in (
                    agent.text()
                )
                assert watch.seen == [b"online"]
            watcher.cancel()


async def test_collector_reload_applies_estate_and_refuses_restart_only(
    tmp_path: Path,
) -> None:
    async with counting_target() as target, mosquitto(tmp_path / "mqtt") as broker:
        web_port = free_port()
        keep = web_check(target.url("keep"), name="keep")
        drop = web_check(target.url("drop"), name="drop")
        path = config(tmp_path, broker.port, web_port, [keep, drop])
        collector = procs.collector(path, tmp_path / "collector.log")
        agent = procs.agent(path, "hq", tmp_path / "agent.log")
        async with procs.running(collector, agent):
            await procs.wait_collector_ready(collector, web_port)
            await procs.poll_until(
                lambda: status(web_port),
                lambda s: s == {"keep": "up", "drop": "up"},
                what="both checks up on the collector",
                alive=collector,
            )
            scraped = await procs.metrics(web_port)
            assert procs.sample(scraped, "availmon_config_reload_total", result="ok") == 0
            started = procs.sample(scraped, "availmon_config_last_reload_success_timestamp_seconds")
            assert started > 0

            assert await maintenance(web_port) == []

            new = web_check(target.url("new"), name="new", area="email")
            window = {
                "name": "daily-patching",
                "every": "day",
                "start": "02:00:00",
                "end": "04:00:00",
                "sites": ["hq"],
                "reason": "patching for the test",
            }
            config(tmp_path, broker.port, web_port, [keep, new], maintenance=[window])
            hup(collector)
            hup(agent)
            await log_lines(collector, "config reload ok", 1)
            await procs.poll_until(
                lambda: status(web_port),
                lambda s: s == {"keep": "up", "new": "up"},
                what="the new check up, the removed one gone",
                alive=collector,
            )
            scraped = await procs.metrics(web_port)
            assert procs.sample(scraped, "availmon_config_reload_total", result="ok") == 1
            assert procs.sample(scraped, "availmon_config_reload_total", result="failed") == 0
            assert (
                procs.sample(scraped, "availmon_config_last_reload_success_timestamp_seconds")
                >= started
            )
            assert procs.sample(scraped, "availmon_mqtt_connects_total") == 1
            assert (
                procs.sample(scraped, "availmon_check_up", site="hq", check="new", area="email")
                == 1
            )
            assert (
                "availmon_check_up",
                (("area", "internet_web"), ("check", "drop"), ("site", "hq")),
            ) not in scraped
            assert await maintenance(web_port) == ["patching for the test"]

            # Bad: refused with file, key and value; the old config keeps running.
            good = path.read_text()
            path.write_text(good.replace('area = "email"', 'area = "nowhere"'))
            hup(collector)
            await log_lines(collector, "config reload failed", 1)
            assert f"config reload refused: {path}: sites.hq.checks.new.area" in collector.text()
            # A setting only a restart applies: refused, named, the old one keeps running.
            path.write_text(good.replace(str(tmp_path / "collector.db"), str(tmp_path / "x.db")))
            hup(collector)
            await log_lines(collector, "config reload failed", 2)
            assert "collector.database:" in collector.text()
            assert "needs a restart" in collector.text()
            scraped = await procs.metrics(web_port)
            assert procs.sample(scraped, "availmon_config_reload_total", result="failed") == 2
            assert procs.sample(scraped, "availmon_mqtt_connects_total") == 1
            assert await status(web_port) == {"keep": "up", "new": "up"}
            assert collector.running()


async def test_collector_reload_adds_alert_routes_and_rotates_tokens(tmp_path: Path) -> None:
    """Alerting and the web's tokens change live: a route added by a reload tells the next
    outage, and a read token set by a reload is required at once, on the same session."""
    secret = f"hook-{CANARY}"
    async with (
        counting_target() as target,
        mosquitto(tmp_path / "mqtt") as broker,
        hook_receiver(secret) as rx,
    ):
        web_port = free_port()
        checks = [web_check(target.url("web"))]
        path = config(tmp_path, broker.port, web_port, checks)
        collector = procs.collector(path, tmp_path / "collector.log")
        agent = procs.agent(path, "hq", tmp_path / "agent.log")
        async with procs.running(collector, agent):
            await procs.wait_collector_ready(collector, web_port)
            await procs.poll_until(
                lambda: status(web_port), lambda s: s == {"web": "up"}, alive=collector
            )
            token = "read-token-for-the-test"
            config(
                tmp_path,
                broker.port,
                web_port,
                checks,
                web={"read_token_file": str(write_secret(tmp_path / "read-token", token))},
                alerts={
                    "board_url": f"http://127.0.0.1:{web_port}/",
                    "channels": {
                        "team": {
                            "type": "webhook",
                            "url": rx.url,
                            "secret_file": str(write_secret(tmp_path / "hook", secret)),
                        }
                    },
                    "routes": [{"name": "all", "channels": ["team"], "wait": 0}],
                },
            )
            hup(collector)
            await log_lines(collector, "config reload ok", 1)
            url = f"http://127.0.0.1:{web_port}/api/v1/status"
            refused = await get(url)
            assert refused is not None
            assert refused[0] == 401
            # The token reads the status (polled: on a loaded machine a late heartbeat can
            # leave the check unknown for a moment, whatever the reload did).
            await procs.poll_until(
                lambda: status(web_port, token), lambda s: s == {"web": "up"}, alive=collector
            )

            target.failing.add("web")
            await rx.wait_for(lambda: any(m["kind"] == "firing" for m in rx.received))
            assert [m["check"] for m in rx.received] == ["web"]
            got = await get(f"http://127.0.0.1:{web_port}/metrics", token)
            assert got is not None
            assert got[0] == 200
            assert "\navailmon_mqtt_connects_total 1.0\n" in got[1]
