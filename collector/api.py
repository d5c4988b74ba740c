"""The JSON API under ``/api/v1`` and its OpenAPI document (issue 12).

Responses are built from the board's view functions and passed through the pydantic models
below before they are sent, so what the server says always matches the schema it
publishes at ``/api/v1/openapi.json`` (and a test runs schemathesis against the two).
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from availmon.clock import utcnow
from collector import auth, board
from collector.accounting import (
    PeriodError,
    date_range,
    parse_date,
    parse_period,
    quarter_containing,
)
from collector.outbox import list_alerts

if TYPE_CHECKING:
    from collector.main import Collector

Shown = Literal["up", "degraded", "down", "maintenance", "unreachable", "unknown"]
Kind = Literal["unplanned", "planned", "degraded", "unknown"]
#: ``?kind=``: the report's kind or the board's word for an outage (``outage_shown``): an
#: outage is never "up", and "unreachable" is only the live board's verdict, not a row's.
KINDS = ("unplanned", "planned", "degraded", "down", "maintenance", "unknown")


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CheckOut(Out):
    """A check's live state. Latency only while it answers; a measure not taken is null."""

    site: str
    site_name: str
    partner: str | None
    partner_name: str
    check: str
    type: str | None
    target: str | None
    provider: str | None
    area: str
    area_name: str
    agent: str | None
    state: Shown = Field(description="maintenance: an open outage marked planned")
    since: str | None = Field(description="when the current state began (UTC, ISO 8601)")
    reason: str | None = Field(description="what the last probe saw when not up")
    latency_seconds: float | None
    loss_ratio: float | None
    jitter_seconds: float | None
    cert_expiry_seconds: float | None
    probe_duration_seconds: float | None


class ChecksOut(Out):
    checks: list[CheckOut]


class OutageOut(Out):
    id: str
    site: str
    site_name: str
    partner: str | None
    partner_name: str
    check: str | None
    area: str
    area_name: str
    state: str = Field(description="down, degraded or unknown, as the probes decided")
    kind: Kind = Field(description="as in the report and the import CSV")
    shown: Shown = Field(description="as the board shows it: planned work is maintenance")
    planned: bool
    start: str
    end: str | None
    open: bool
    duration_seconds: float
    reason: str | None = Field(description="what the probes saw when it began, e.g. HTTP 503")
    cause: str | None
    provider: str | None
    note: str | None
    source: str = Field(description="agent, import or provisional (agent offline)")
    annotated_by: str | None
    annotated_at: str | None
    why: str | None = Field(
        default=None,
        description="why it does not stand on its own now: in a maintenance window, behind a"
        " down dependency, or seen by too few sites of a quorum service",
    )


class OutagesOut(Out):
    period: str
    start: str
    end: str
    outages: list[OutageOut]


class ProbeEventOut(Out):
    id: str
    at: str
    detected_at: str
    from_: str = Field(alias="from")
    to: str
    error: str | None
    latency_seconds: float | None
    loss_percent: float | None
    probes: int | None
    cause: str | None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class AnnotationChangeOut(Out):
    at: str
    by: str | None
    cause: str | None
    provider: str | None
    note: str | None
    planned: bool | None


class OutageDetailOut(OutageOut):
    events: list[ProbeEventOut]
    annotations: list[AnnotationChangeOut] = Field(description="who changed what, oldest first")


class BarOut(Out):
    start: str
    end: str
    state: Literal["up", "degraded", "down", "maintenance", "unknown", "nodata"]
    uptime_ratio: float | None
    down_seconds: float
    degraded_seconds: float
    maintenance_seconds: float
    unknown_seconds: float
    title: str


class WindowOut(Out):
    id: Literal["24h", "30d", "quarter"]
    label: str
    uptime_ratio: float | None
    uptime_percent: float | None = Field(description="rounded down to two decimals")
    downtime_seconds: float
    bars: list[BarOut]


class LatencyPointOut(Out):
    at: float = Field(description="Unix time")
    latency_seconds: float | None


class CheckHistoryOut(Out):
    check: CheckOut
    first_seen: str | None
    windows: list[WindowOut]
    latency: list[LatencyPointOut] = Field(description="since the collector started, <= 24 h")
    outages: list[OutageOut]


class ErrorOut(Out):
    error: str


class AlertMessagesOut(Out):
    pending: int
    sent: int
    failed: int = Field(description="the last try failed; it is retried")
    cancelled: int = Field(description="a repeat overtaken by the resolution")


class AlertOut(Out):
    """One outage's alert (its id is the outage's)."""

    id: str
    site: str
    check: str | None
    area: str
    state: str
    severity: str | None = Field(description="page (down) or ticket (degraded, or as set)")
    status: Literal["open", "resolved", "late"] = Field(
        description="late: learnt of after it ended longer ago than alerts.late_limit"
    )
    delivery: Literal["acknowledged", "failed", "pending", "sent", "held", "none"]
    start: str | None
    end: str | None
    routes: list[str]
    suppressed: str | None = Field(description="why its messages are held back, if they are")
    flapping: bool
    acknowledged_at: str | None
    acknowledged_by: str | None
    messages: AlertMessagesOut


class OutboxMessageOut(Out):
    id: int
    key: str = Field(description="outage/kind/route/channel: the receiver's dedupe key")
    channel: str
    kind: Literal["firing", "repeat", "escalation", "resolved", "test"]
    status: Literal["pending", "sent", "failed", "cancelled"]
    attempts: int
    last_error: str | None
    sent_at: str | None


class AlertDetailOut(AlertOut):
    outbox: list[OutboxMessageOut]


class AlertsOut(Out):
    alerts: list[AlertOut]


def _error(status: int, text: str) -> web.Response:
    return web.json_response({"error": text}, status=status)


def _json(model: type[BaseModel], data: Any) -> web.Response:
    return web.json_response(model.model_validate(data).model_dump(mode="json", by_alias=True))


COLLECTOR = board.COLLECTOR


async def checks(request: web.Request) -> web.Response:
    """From the board's current build (``BoardFeed.current``), made off the event loop and
    shared: a snapshot of every check per request held the loop (ingest, every page) for
    as long as it took, for any reader that asked."""
    built = await request.app[board.FEED].current()
    body = built.bodies.get(_CHECKS_BODY)
    if body is None:
        out = ChecksOut.model_validate({"checks": built.snap["checks"]})
        body = built.bodies[_CHECKS_BODY] = json.dumps(
            out.model_dump(mode="json", by_alias=True)
        ).encode()
    return web.Response(body=body, content_type="application/json")


#: The key of ``/api/v1/checks``'s body among a build's bodies.
_CHECKS_BODY = ("api", "checks")


async def check_history(request: web.Request) -> web.Response:
    collector = request.app[COLLECTOR]
    site, check = request.match_info["site"], request.match_info["check"]
    estate = collector.estate
    live = collector.live.get((site, check))
    if live is None and (site not in estate.sites or estate.check(site, check) is None):
        return _error(404, f"no check {check!r} at site {site!r}")
    now = utcnow()
    history = await collector.read(
        board.check_history, collector.read_store, estate, site, check, now
    )
    view = board.check_view(site, check, live, estate, board.Names(estate), False, now)
    if view["state"] != "up" and any(o["open"] and o["planned"] for o in history["outages"]):
        view["state"] = "maintenance"
    latency = request.app[board.FEED].latency.series(site, check)
    return _json(
        CheckHistoryOut,
        {
            "check": view,
            "first_seen": history["first_seen"],
            "windows": history["windows"],
            "latency": [{"at": t, "latency_seconds": v} for t, v in latency],
            "outages": history["outages"],
        },
    )


def _outages(
    collector: Collector,
    start: datetime,
    end: datetime,
    filters: dict[str, str],
    limit: int,
) -> list[dict[str, Any]]:
    estate = collector.estate
    store = collector.read_store
    now = utcnow()
    names = board.Names(estate)
    partner = filters.get("partner")
    rows = store.board_outages(
        start=start,
        end=end,
        site=filters.get("site"),
        sites=None
        if partner is None
        else [k for k, v in estate.sites.items() if v.partner == partner],
        area=filters.get("area"),
        kind=filters.get("kind"),
        open_only=filters.get("open") == "true",
        closed_only=filters.get("open") == "false",
        limit=limit,
    )
    out = [board.outage_view(row, names, None, now) for row in rows]
    starts = {r["id"]: r["start_event"] for r in rows if r["start_event"]}
    evidence = store.start_evidence([starts[v["id"]] for v in out if v["id"] in starts])
    for view in out:
        ev = evidence.get(starts.get(view["id"]) or "")
        if ev and ev.get("error"):
            view["reason"] = ev["error"]
    return out


async def outages(request: web.Request) -> web.Response:
    """Outages overlapping a period (default this quarter), filtered."""
    collector = request.app[COLLECTOR]
    tz = ZoneInfo(collector.estate.accounting.timezone)
    q = request.query
    try:
        if "from" in q or "to" in q:
            if "from" not in q or "to" not in q:
                raise PeriodError("give both from and to (YYYY-MM-DD), or period")
            period = date_range(parse_date(q["from"]), parse_date(q["to"]), tz)
        elif "period" in q:
            period = parse_period(q["period"], tz)
        else:
            period = quarter_containing(utcnow(), tz)
    except PeriodError as exc:
        return _error(400, str(exc))
    filters = {k: q[k] for k in ("area", "site", "partner", "kind", "open") if k in q}
    if filters.get("open") not in (None, "true", "false"):
        return _error(400, "open must be true or false")
    if filters.get("kind") not in (None, *KINDS):
        return _error(400, f"kind must be {', '.join(KINDS[:-1])} or {KINDS[-1]}")
    try:
        limit = int(q.get("limit", "1000"))
    except ValueError:
        return _error(400, "limit must be a whole number")
    if not 1 <= limit <= 10_000:
        return _error(400, "limit must be between 1 and 10000")
    rows = await collector.read(_outages, collector, period.start, period.end, filters, limit)
    return _json(
        OutagesOut,
        {
            "period": period.id,
            "start": period.start.isoformat(),
            "end": period.end.isoformat(),
            "outages": rows,
        },
    )


async def outage(request: web.Request) -> web.Response:
    collector = request.app[COLLECTOR]
    oid = request.match_info["id"]
    detail = await collector.read(
        board.outage_detail, collector.read_store, collector.estate, oid, utcnow()
    )
    if detail is None:
        return _error(404, f"no outage with id {oid!r}")
    return _json(OutageDetailOut, detail)


async def alerts(request: web.Request) -> web.Response:
    collector = request.app[board.COLLECTOR]
    open_only = request.query.get("open") == "true"
    rows = await collector.read(partial(list_alerts, open_only=open_only), collector.read_store)
    return _json(AlertsOut, {"alerts": rows})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


def add_api(app: web.Application) -> None:
    """Mount the API routes (the board must be mounted first: it owns the feed)."""
    app.router.add_get("/api/v1/checks", checks)
    app.router.add_get("/api/v1/checks/{site}/{check}", check_history)
    app.router.add_get("/api/v1/outages", outages)
    app.router.add_get("/api/v1/outages/{id}", outage)
    app.router.add_post("/api/v1/outages/{id}/annotations", board.api_write(board.ANNOTATE))
    app.router.add_get("/api/v1/maintenance", board.api_windows)
    app.router.add_post("/api/v1/maintenance", board.api_maintenance)
    app.router.add_get("/api/v1/alerts", alerts)
    app.router.add_post("/api/v1/alerts/{id}/ack", board.api_write(board.ACKNOWLEDGE))
    app.router.add_get("/api/v1/openapi.json", openapi)


# -- the OpenAPI document ----------------------------------------------------------------

_ERRORS = {
    "400": "bad request (the message says which field and why)",
    "401": "a token is needed (reads: when web.read_token_file is set; writes: always)",
    "403": "writes are disabled: the collector has no web.token_file",
    "404": "no such check, outage or alert",
    "408": "the body did not arrive within web.body_timeout; the connection is closed",
    "409": "the same maintenance window (start, end and scope) is declared already and not"
    " cancelled; the message names it",
}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _ok(name: str, text: str) -> dict[str, Any]:
    return {"description": text, "content": {"application/json": {"schema": _ref(name)}}}


def _err(*codes: str) -> dict[str, Any]:
    return {
        c: {
            "description": _ERRORS[c],
            "content": {"application/json": {"schema": _ref("ErrorOut")}},
        }
        for c in codes
    }


def _param(name: str, where: str, text: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "description": text,
        "schema": {"type": "string", **schema},
    }


PERIOD_PATTERN = (
    r"^(FY[0-9]{4}Q[1-4]|[0-9]{4}Q[1-4]|[0-9]{4}-(0[1-9]|1[0-2])"
    r"|[0-9]{4}-[0-9]{2}-[0-9]{2}\.\.[0-9]{4}-[0-9]{2}-[0-9]{2})$"
)


def openapi_document() -> dict[str, Any]:
    models: list[type[BaseModel]] = [
        ChecksOut,
        CheckHistoryOut,
        OutagesOut,
        OutageDetailOut,
        AlertsOut,
        AlertDetailOut,
        ErrorOut,
    ]
    _, top = models_json_schema(
        [(m, "serialization") for m in models]
        + [
            (board.AnnotationIn, "validation"),
            (board.MaintenanceIn, "validation"),
            (board.AckIn, "validation"),
        ],
        ref_template="#/components/schemas/{model}",
    )
    schemas = top.get("$defs", {})
    read = _err("401")
    period_params = [
        _param(
            "period",
            "query",
            "FY2019Q2, 2019Q3, 2019-09 or 2019-07-01..2019-09-30",
            pattern=PERIOD_PATTERN,
        ),
        _param("from", "query", "first day, YYYY-MM-DD (with to)", format="date"),
        _param("to", "query", "last day, YYYY-MM-DD, included (with from)", format="date"),
        _param("area", "query", "area id, e.g. email"),
        _param("site", "query", "site id"),
        _param("partner", "query", "partner id, e.g. CCC"),
        _param(
            "kind",
            "query",
            "unplanned, planned, degraded (as in the report) or down, maintenance, unknown",
            enum=list(KINDS),
        ),
        _param(
            "open", "query", "only ongoing (true) or only ended (false)", enum=["true", "false"]
        ),
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "description": "at most this many, newest first (default 1000)",
            "schema": {"type": "integer", "minimum": 1, "maximum": 10000},
        },
    ]
    loose = {"type": "object", "additionalProperties": True}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "availmon collector API",
            "version": "1",
            "description": "Live status, check history, outages and availability figures. "
            "Reads are open unless web.read_token_file is set; writes need the bearer token "
            "from web.token_file and say who is writing in X-Availmon-User.",
        },
        "servers": [{"url": "/"}],
        "security": [{}, {"bearer": []}],
        "paths": {
            "/api/v1/status": {
                "get": {
                    "summary": "Live status: agents, checks and outages (open and recent)",
                    "responses": {
                        "200": {
                            "description": "the live view",
                            "content": {"application/json": {"schema": loose}},
                        },
                        **read,
                    },
                }
            },
            "/api/v1/checks": {
                "get": {
                    "summary": "Every check's live state",
                    "responses": {"200": _ok("ChecksOut", "every check"), **read},
                }
            },
            "/api/v1/checks/{site}/{check}": {
                "get": {
                    "summary": "One check: bars and uptime for 24 h, 30 days and this quarter",
                    "parameters": [
                        _param("site", "path", "site id"),
                        _param("check", "path", "check name"),
                    ],
                    "responses": {
                        "200": _ok("CheckHistoryOut", "the check and its history"),
                        **read,
                        **_err("404"),
                    },
                }
            },
            "/api/v1/outages": {
                "get": {
                    "summary": "Outages overlapping a period (default: this quarter)",
                    "parameters": period_params,
                    "responses": {
                        "200": _ok("OutagesOut", "the outages, newest first"),
                        **read,
                        **_err("400"),
                    },
                }
            },
            "/api/v1/outages/{id}": {
                "get": {
                    "summary": "One outage: what the probes saw, annotations and who made them",
                    "parameters": [_param("id", "path", "outage id")],
                    "responses": {
                        "200": _ok("OutageDetailOut", "the outage"),
                        **read,
                        **_err("404"),
                    },
                }
            },
            "/api/v1/outages/{id}/annotations": {
                "post": {
                    "summary": "Annotate an outage or mark it planned (needs the write token)",
                    "security": [{"bearer": []}],
                    "parameters": [
                        _param("id", "path", "outage id"),
                        {
                            "name": "X-Availmon-User",
                            "in": "header",
                            "required": True,
                            "description": "who is writing (recorded with the change)",
                            "schema": {"type": "string", "pattern": auth.WHO_PATTERN},
                        },
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("AnnotationIn")}},
                    },
                    "responses": {
                        "200": _ok("OutageDetailOut", "the outage as it now stands"),
                        **_err("400", "401", "403", "404", "408"),
                    },
                }
            },
            "/api/v1/maintenance": {
                "get": {
                    "summary": "Maintenance windows from a week ago to a month ahead",
                    "responses": {
                        "200": {
                            "description": "declared and recurring windows",
                            "content": {"application/json": {"schema": loose}},
                        },
                        **read,
                    },
                },
                "post": {
                    "summary": "Declare a maintenance window (needs the write token)",
                    "security": [{"bearer": []}],
                    "parameters": [
                        {
                            "name": "X-Availmon-User",
                            "in": "header",
                            "required": True,
                            "description": "who is declaring it (recorded with it)",
                            "schema": {"type": "string", "pattern": auth.WHO_PATTERN},
                        },
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("MaintenanceIn")}},
                    },
                    "responses": {
                        "201": {
                            "description": "the window as recorded, with who and when",
                            "content": {"application/json": {"schema": loose}},
                        },
                        **_err("400", "401", "403", "408", "409"),
                    },
                },
            },
            "/api/v1/alerts": {
                "get": {
                    "summary": "Alerts, newest first: delivery, silencing, acknowledgement",
                    "parameters": [
                        _param(
                            "open", "query", "only alerts still open (true)", enum=["true", "false"]
                        )
                    ],
                    "responses": {"200": _ok("AlertsOut", "the alerts"), **read},
                }
            },
            "/api/v1/alerts/{id}/ack": {
                "post": {
                    "summary": "Acknowledge an alert: repeats and escalation stop (write token)",
                    "security": [{"bearer": []}],
                    "parameters": [
                        _param("id", "path", "alert id (the outage's id)"),
                        {
                            "name": "X-Availmon-User",
                            "in": "header",
                            "required": True,
                            "description": "who is acknowledging (recorded with it)",
                            "schema": {"type": "string", "pattern": auth.WHO_PATTERN},
                        },
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("AckIn")}},
                    },
                    "responses": {
                        "200": _ok("AlertDetailOut", "the alert as it now stands"),
                        **_err("400", "401", "403", "404", "408"),
                    },
                }
            },
            "/api/v1/report": {
                "get": {
                    "summary": "The quarterly report's figures (default: the quarter to date)",
                    "parameters": [
                        _param(
                            "period",
                            "query",
                            "FY2019Q2, 2019Q3, 2019-09, ...",
                            pattern=PERIOD_PATTERN,
                        )
                    ],
                    "responses": {
                        "200": {
                            "description": "the report, as availmon report --format json",
                            "content": {"application/json": {"schema": loose}},
                        },
                        **read,
                        **_err("400"),
                    },
                }
            },
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
