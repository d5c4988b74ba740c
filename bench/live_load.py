"""The processes of the reads bench (bench/measures/reads.py), each its own process so that
its CPU is its own: ``python -m bench.live_load NAME JSON``.

- ``publish``: agents' event batches at a steady rate through Mosquitto (QoS 1), each
  check flapping down and up, for a bounded time and count;
- ``load``: ``concurrency`` HTTP clients asking one URL for a bounded time and count,
  every latency kept; prints p50, p99 and max;
- ``peer``: a bare aiohttp server of the same data: the status JSON serialised per request
  as a plain handler would, the metrics text as it is.

Loopback only; every loop ends by its deadline and count.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def publish(a: dict[str, Any]) -> dict[str, Any]:
    """``rate`` events/s over ``sites`` agents, one batch per agent every ``tick`` s."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from availmon.schema import Event, State

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-agents")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", a["port"])
    client.loop_start()
    sites: dict[str, list[str]] = a["sites"]
    tick = a["tick"]
    per_batch = max(1, round(a["rate"] * tick / len(sites)))
    state: dict[tuple[str, str], State] = {}
    seq = dict.fromkeys(sites, 0)
    turn = dict.fromkeys(sites, 0)
    sent = 0
    end = time.monotonic() + a["duration"]
    next_tick = time.monotonic()
    try:
        while time.monotonic() < end and sent < a["max_events"]:
            for site, checks in sites.items():
                events = []
                for _ in range(per_batch):
                    check = checks[turn[site] % len(checks)]
                    turn[site] += 1
                    seq[site] += 1
                    frm = state.get((site, check), State.UP)
                    to = State.UP if frm == State.DOWN else State.DOWN
                    state[(site, check)] = to
                    at = datetime.now(UTC)
                    events.append(
                        Event(
                            id=f"{site}:{seq[site]}",
                            seq=seq[site],
                            site=site,
                            agent=site,
                            check=check,
                            area=a["areas"][check],
                            from_=frm,
                            to=to,
                            at=at,
                            detected_at=at,
                        ).to_json()
                    )
                body = b'{"schema":1,"first_seq":1,"events":[' + b",".join(events) + b"]}"
                client.publish(f"availmon/v1/{site}/{site}/events", body, qos=1)
                sent += len(events)
            next_tick += tick
            time.sleep(max(0.0, next_tick - time.monotonic()))
    finally:
        client.disconnect()
        client.loop_stop()
    return {"sent": sent}


async def load(a: dict[str, Any]) -> dict[str, Any]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    end = time.monotonic() + a["duration"]
    limit = a["max_requests"]
    connector = aiohttp.TCPConnector(limit=a["concurrency"])
    headers = {"Accept-Encoding": "identity"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker() -> None:
            nonlocal errors
            while time.monotonic() < end and len(latencies) + errors < limit:
                started = time.perf_counter()
                try:
                    async with session.get(a["url"]) as response:
                        await response.read()
                        ok = response.status == 200
                except aiohttp.ClientError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(a["concurrency"])))
    latencies.sort()
    if not latencies:
        return {"requests": 0, "errors": errors}
    return {
        "requests": len(latencies),
        "errors": errors,
        "p50": statistics.median(latencies),
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "max": latencies[-1],
    }


async def peer(a: dict[str, Any]) -> None:
    from aiohttp import web

    status = json.loads(Path(a["status"]).read_text())  # noqa: ASYNC240
    metrics = Path(a["metrics"]).read_bytes()  # noqa: ASYNC240

    async def api_status(request: web.Request) -> web.Response:
        return web.json_response(status)

    async def api_metrics(request: web.Request) -> web.Response:
        return web.Response(body=metrics, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/api/v1/status", api_status)
    app.router.add_get("/metrics", api_metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", a["port"]).start()
    try:
        await asyncio.sleep(a["duration"])
    finally:
        await runner.cleanup()


def main() -> None:
    name, args = sys.argv[1], json.loads(sys.argv[2])
    if name == "publish":
        print(json.dumps(publish(args)))
    elif name == "load":
        print(json.dumps(asyncio.run(load(args))))
    elif name == "peer":
        asyncio.run(peer(args))
    else:
        raise SystemExit(f"unknown driver {name!r}")


if __name__ == "__main__":
    main()
