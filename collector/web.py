"""The collector's read-only web surface: status page, JSON API and /metrics.

Shared state lives on the app under typed keys (no singletons); store reads run on the
collector's reader thread, never on the event loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web
from jinja2 import Environment, PackageLoader
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from availmon.clock import LONDON, from_iso, to_iso, utcnow
from collector.accounting import PeriodError
from collector.report import report_json

if TYPE_CHECKING:
    from collector.main import Collector

COLLECTOR: web.AppKey[Collector] = web.AppKey("collector")
TEMPLATES: web.AppKey[Environment] = web.AppKey("templates")


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
            {"site": a.site, "agent": a.agent, "status": a.status}
            for a in sorted(collector.agents.values(), key=lambda a: (a.site, a.agent))
        ],
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


async def index(request: web.Request) -> web.Response:
    collector = request.app[COLLECTOR]
    snapshot = await collector.read(status_snapshot, collector)
    html = (
        request.app[TEMPLATES]
        .get_template("status.html")
        .render(estate=collector.estate, **snapshot)
    )
    return web.Response(text=html, content_type="text/html")


async def healthz(request: web.Request) -> web.Response:
    collector = request.app[COLLECTOR]
    ok = collector.connected.is_set()
    return web.json_response({"mqtt_connected": ok}, status=200 if ok else 503)


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
    app = web.Application()
    app[COLLECTOR] = collector
    # Autoescape whatever the template is called: the page shows imported check names.
    env = Environment(loader=PackageLoader("collector", "templates"), autoescape=True)
    env.filters["local"] = local_time
    env.globals["duration"] = duration
    app[TEMPLATES] = env
    app.router.add_get("/", index)
    app.router.add_get("/api/v1/status", api_status)
    app.router.add_get("/api/v1/report", api_report)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app
