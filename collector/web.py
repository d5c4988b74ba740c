"""The collector's web surface: the live board (collector/board.py), the JSON API
(collector/api.py), /metrics and /healthz.

Shared state lives on the app under typed keys (no singletons); store reads run on the
collector's reader thread, never on the event loop. Reads are open unless
``web.read_token_file`` is set; writes always need ``web.token_file`` (collector/auth.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from availmon.clock import LONDON, from_iso, to_iso, utcnow
from collector import auth
from collector.accounting import PeriodError
from collector.api import add_api
from collector.board import add_board
from collector.report import report_json

if TYPE_CHECKING:
    from collector.main import Collector

COLLECTOR: web.AppKey[Collector] = web.AppKey("collector")


def status_snapshot(collector: Collector) -> dict[str, Any]:
    """Runs on the reader thread: one consistent read for the page and the API."""
    store = collector.read_store
    estate = collector.estate
    checks = []
    for c in sorted(collector.live.values(), key=lambda c: (c.site, c.check)):
        checks.append(
            {
                "site": c.site,
                "agent": c.agent,
                "check": c.check,
                "area": c.area,
                "area_name": estate.areas[c.area].name if c.area in estate.areas else c.area,
                "state": c.state.value,
                "latency": c.latency,
            }
        )
    return {
        "generated_at": to_iso(utcnow()),
        "agents": [
            {
                "site": a.site,
                "agent": a.agent,
                "status": a.status,
                # Seqs numbered by the agent that never reached this collector (issue 8).
                "missing": collector.missing.get(a.agent, 0),
                # Per required collector, what the agent's spool still holds for it.
                "unconfirmed": dict(a.unconfirmed),
            }
            for a in sorted(collector.agents.values(), key=lambda a: (a.site, a.agent))
        ],
        "collector": {
            "id": collector.estate.collector.client_id,
            "is_leader": collector.is_leader,
            "store_error": collector.store_error,
        },
        "checks": checks,
        "open_outages": store.outages(open_only=True),
        "recent_outages": store.outages(limit=50),
    }


async def api_status(request: web.Request) -> web.Response:
    collector = request.app[COLLECTOR]
    return web.json_response(await collector.read(status_snapshot, collector))


async def api_report(request: web.Request) -> web.Response:
    """The quarterly report's JSON (issue 3); ``?period=FY2019Q2``, else the quarter to date."""
    collector = request.app[COLLECTOR]
    period = request.query.get("period")
    try:
        data = await collector.read(
            report_json, collector.read_store, collector.estate, period, utcnow()
        )
    except PeriodError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(data)


async def metrics(request: web.Request) -> web.Response:
    collector = request.app[COLLECTOR]
    body = await collector.read(generate_latest, collector.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    collector = request.app[COLLECTOR]
    connected = collector.connected.is_set()
    writable = collector.store_error is None
    return web.json_response(
        {
            "mqtt_connected": connected,
            "store_writable": writable,
            "store_error": collector.store_error,
        },
        status=200 if connected and writable else 503,
    )


def local_time(text: str | None) -> str:
    """Stored UTC text as the wall-clock time people in the councils read."""
    if not text:
        return ""
    return from_iso(text).astimezone(LONDON).strftime("%a %d %b %H:%M:%S %Z")


def duration(start: str | None, end: str | None = None) -> str:
    if not start:
        return ""
    seconds = int(((from_iso(end) if end else utcnow()) - from_iso(start)).total_seconds())
    hours, rest = divmod(max(seconds, 0), 3600)
    return f"{hours}h {rest // 60:02d}m" if hours else f"{rest // 60}m {rest % 60:02d}s"


def make_app(collector: Collector) -> web.Application:
    app = web.Application(middlewares=[auth.read_guard()])
    app[COLLECTOR] = collector
    app[auth.TOKENS] = auth.Tokens.from_config(collector.estate.web)
    add_board(app, collector)  # "/", /board/..., /static/...
    add_api(app)
    app.router.add_get("/api/v1/status", api_status)
    app.router.add_get("/api/v1/report", api_report)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app
