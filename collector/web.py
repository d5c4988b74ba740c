"""The collector's web surface: the live board (collector/board.py), the JSON API
(collector/api.py), /metrics and /healthz.

Shared state lives on the app under typed keys (no singletons); store reads run on the
collector's reader thread, never on the event loop. Reads are open unless
``web.read_token_file`` is set; writes always need ``web.token_file`` (collector/auth.py).

``/api/v1/status`` and ``/metrics`` come from memory (issue 9), and the clients asking
at the same moment share one build of the body (``BodyCache``): never older than the
request (a build that began after it arrived), and for status reused until something it
shows changes, so twenty clients polling cost one build.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from aiohttp import hdrs, web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from prometheus_client import CONTENT_TYPE_LATEST
from yarl import URL

from availmon.clock import to_iso, utcnow
from availmon.logs import Sparse, SparseBy
from collector import auth
from collector.accounting import PeriodError
from collector.api import add_api
from collector.board import add_board
from collector.live import STATUS_KEYS
from collector.report import report_json

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from availmon.config import Estate
    from collector.main import Collector
    from collector.metrics import LiveCheck

COLLECTOR: web.AppKey[Collector] = web.AppKey("collector")
#: Strict JSON: NaN or Infinity is an error here, not a body strict parsers reject.
_dumps = partial(json.dumps, allow_nan=False)
#: How long a status body is reused while its key (everything it shows) is unchanged:
#: its ``generated_at`` stays within this of the request.
MAX_AGE = 1.0


@dataclass
class _Body:
    key: tuple[Any, ...] | None
    started: float  # monotonic time its build began
    body: bytes


class BodyCache:
    """One response body shared by the clients that ask at once.

    A request gets a body whose build began after it arrived (so it shows everything that
    happened before the request), joining a build in progress or waiting for the next one;
    with a ``key`` (everything the body shows), a body with the same key and less than
    ``MAX_AGE`` old is reused as it is."""

    def __init__(self) -> None:
        self._body: _Body | None = None
        self._building: tuple[float, asyncio.Future[bytes]] | None = None

    async def get(
        self, key: tuple[Any, ...] | None, build: Callable[[], Awaitable[bytes]]
    ) -> bytes:
        arrived = time.monotonic()
        while True:
            b = self._body
            if b is not None and (
                b.started >= arrived
                or (key is not None and b.key == key and arrived - b.started < MAX_AGE)
            ):
                return b.body
            if self._building is not None:
                started, pending = self._building
                try:
                    body = await asyncio.shield(pending)
                except Exception:
                    continue  # that build failed: this request builds its own
                if started >= arrived:
                    return body
                continue  # that build began before this request: wait for the next
            return await self._build(key, build)

    async def _build(
        self, key: tuple[Any, ...] | None, build: Callable[[], Awaitable[bytes]]
    ) -> bytes:
        started = time.monotonic()
        pending: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._building = (started, pending)
        try:
            body = await build()
        except BaseException as exc:
            failed = exc if isinstance(exc, Exception) else RuntimeError("build cancelled")
            pending.set_exception(failed)
            pending.exception()  # read here: a build nobody else waited for is not an error
            raise
        finally:
            self._building = None
        self._body = _Body(key, started, body)
        pending.set_result(body)
        return body


STATUS_BODY: web.AppKey[BodyCache] = web.AppKey("status_body")
STATUS_JSON: web.AppKey[StatusBody] = web.AppKey("status_json")
METRICS_BODY: web.AppKey[BodyCache] = web.AppKey("metrics_body")


def _check_json(c: LiveCheck, estate: Estate) -> dict[str, Any]:
    return {
        "site": c.site,
        "agent": c.agent,
        "check": c.check,
        "area": c.area,
        "area_name": estate.areas[c.area].name if c.area in estate.areas else c.area,
        "state": c.state.value,
        "latency": c.latency,
    }


def _status_head(collector: Collector) -> dict[str, Any]:
    """The status's small parts (each agent, this collector)."""
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
                # Held in memory because its spool cannot be written (lost if it stops),
                # and why; None from an agent too old to say.
                "spool_unwritten": a.spool_unwritten,
                "spool_error": a.spool_error,
            }
            for a in sorted(collector.agents.values(), key=lambda a: (a.site, a.agent))
        ],
        "collector": {
            "id": collector.estate.collector.client_id,
            "is_leader": collector.is_leader,
            "store_error": collector.store_error,
        },
    }


def status_snapshot(collector: Collector) -> dict[str, Any]:
    """The live status, from memory (the collector's live dicts and its outage view)."""
    checks = sorted(collector.live.values(), key=lambda c: (c.site, c.check))
    return {
        **_status_head(collector),
        "checks": [_check_json(c, collector.estate) for c in checks],
        "open_outages": collector.view.status_open(),
        "recent_outages": collector.view.status_recent(),
    }


class StatusBody:
    """``status_snapshot`` as JSON, its big lists assembled from each check's and each
    outage's JSON, serialised once per value (a ``LiveCheck`` or an outage row is replaced,
    never changed, when what it holds changes): a build after a commit re-serialises what
    the commit changed, not the thousand checks that stayed as they were."""

    def __init__(self) -> None:
        self._checks: dict[tuple[str, str], tuple[LiveCheck, bytes]] = {}
        self._rows: dict[str, tuple[dict[str, Any], bytes]] = {}

    def build(self, collector: Collector) -> bytes:
        estate = collector.estate
        checks: dict[tuple[str, str], tuple[LiveCheck, bytes]] = {}
        for c in sorted(collector.live.values(), key=lambda c: (c.site, c.check)):
            key = (c.site, c.check)
            hit = self._checks.get(key)
            checks[key] = (
                hit
                if hit is not None and hit[0] is c
                else (c, _dumps(_check_json(c, estate)).encode())
            )
        self._checks = checks
        view = collector.view
        open_rows, recent = view.open_rows(), view.recent_started()
        rows: dict[str, tuple[dict[str, Any], bytes]] = {}
        for row in (*open_rows, *recent):
            seen = self._rows.get(row["id"])
            if seen is None or seen[0] is not row:
                seen = (row, _dumps({k: row[k] for k in STATUS_KEYS}).encode())
            rows[row["id"]] = seen
        self._rows = rows
        head = _dumps(_status_head(collector)).encode()
        return b"".join(
            (
                head[:-1],
                b', "checks": [',
                b", ".join(body for _, body in checks.values()),
                b'], "open_outages": [',
                b", ".join(rows[r["id"]][1] for r in open_rows),
                b'], "recent_outages": [',
                b", ".join(rows[r["id"]][1] for r in recent),
                b"]}",
            )
        )


async def api_status(request: web.Request) -> web.Response:
    collector = request.app[COLLECTOR]
    await collector.catch_up_async()
    renderer = request.app[STATUS_JSON]

    async def build() -> bytes:
        return renderer.build(collector)

    key = (
        collector.view.version,
        collector.notifications,
        collector.store_error,
        collector.is_leader,
        tuple(sorted(collector.missing.items())),
    )
    body = await request.app[STATUS_BODY].get(key, build)
    return web.Response(body=body, content_type="application/json")


async def api_report(request: web.Request) -> web.Response:
    """The quarterly report's JSON (issue 3); ``?period=FY2019Q2``, else the quarter to date."""
    collector = request.app[COLLECTOR]
    period = request.query.get("period")
    try:
        data = await collector.report(
            report_json, collector.report_store, collector.estate, period, utcnow()
        )
    except PeriodError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(data, dumps=_dumps)


async def metrics(request: web.Request) -> web.Response:
    collector = request.app[COLLECTOR]

    async def build() -> bytes:
        body: bytes = await collector.scrape(collector.metrics.render, collector.notifications)
        return body

    body = await request.app[METRICS_BODY].get(None, build)
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


#: On every response. The pages load their script and stylesheet from /static/ and have
#: nothing inline (no <script> or <style> text, no style or on* attributes: the values the
#: board set in style attributes are in classes, or set by board.js), so the policy needs no
#: 'unsafe-inline'; nobody may frame the board (clickjacking a write form); forms post here.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
#: The Server header, without aiohttp's and Python's versions.
SERVER = "availmon"


def harden(response: web.StreamResponse) -> None:
    """Add the security headers and the versionless Server header to ``response``."""
    response.headers.update(SECURITY_HEADERS)
    response.headers["Server"] = SERVER


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    harden(response)


def host_name(header: str) -> str:
    """The name in a Host header: without its port, an IPv6 address without its brackets,
    in lower case and without a trailing dot (``Board.Example.:9810`` is ``board.example``)."""
    if header.startswith("["):
        name, _, rest = header[1:].partition("]")
        if rest and not (rest[0] == ":" and rest[1:].isdigit()):
            return header.lower()  # "[::1]evil.example": neither an address nor a name of ours
    elif header.count(":") == 1:
        name = header.partition(":")[0]
    else:  # no port, or a bare IPv6 address (not valid in a Host header; not a name either)
        name = header
    return name.lower().removesuffix(".")


def is_ip(name: str) -> bool:
    """An IP address, without a zone (``fe80::1%eth0`` names an interface of the client's,
    and ``ipaddress`` takes any text after the ``%``)."""
    if "%" in name:
        return False
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def machine_names() -> frozenset[str]:
    """``localhost`` and this machine's names; ``getfqdn`` may ask the DNS (run on a thread,
    once, at start)."""
    return frozenset(host_name(n) for n in ("localhost", socket.gethostname(), socket.getfqdn()))


def default_hosts(estate: Estate, machine: frozenset[str]) -> frozenset[str]:
    """The names answered when ``web.allowed_hosts`` is unset: the machine's, the board's in
    ``alerts.board_url``, and ``web.listen`` when that is a name."""
    names = set(machine)
    board = URL(estate.alerts.board_url).host if estate.alerts.board_url else None
    if board:
        names.add(host_name(board))
    if not is_ip(estate.web.listen):
        names.add(host_name(estate.web.listen))
    return frozenset(names)


class HostGate:
    """Which Host headers the web answers (a DNS-rebinding defence): a page on another site
    whose name is made to resolve to this server reaches it under that name, which is not
    one of ours. IP addresses are always answered (rebinding needs a name), and so is a
    request with no Host header (HTTP/1.0 tools). The names follow the estate in force, so
    a reload applies ``web.allowed_hosts``."""

    def __init__(self, on_refused: Callable[[], None] = lambda: None) -> None:
        self.on_refused = on_refused
        #: This machine's names, learnt at start (``machine_names``).
        self.machine = frozenset({"localhost"})
        self._for: tuple[Estate, frozenset[str]] | None = None
        self._names: frozenset[str] = frozenset()
        self._suffixes: tuple[str, ...] = ()
        self._log = SparseBy(60.0)

    def _rules(self, estate: Estate) -> None:
        if self._for is not None and self._for[0] is estate and self._for[1] is self.machine:
            return
        listed = estate.web.allowed_hosts
        names = default_hosts(estate, self.machine) if listed is None else frozenset(listed)
        # ".council.example": that name and any under it.
        self._names = frozenset(n.removeprefix(".") for n in names)
        self._suffixes = tuple(n for n in names if n.startswith("."))
        self._for = (estate, self.machine)

    def allows(self, estate: Estate, header: str | None) -> bool:
        if not header:
            return True
        name = host_name(header)
        if is_ip(name):
            return True
        self._rules(estate)
        return name in self._names or name.endswith(self._suffixes)

    def refusal(self, header: str, remote: str) -> web.Response:
        """The 421 for a name not answered here, counted and logged."""
        self.on_refused()
        shown = header[:100]
        if count := self._log.due(host_name(header)[:100]):
            log.warning(
                "request for host %r from %s refused (421): not in web.allowed_hosts; %d"
                " refused so (at most one such line a minute per host)",
                shown,
                remote,
                count,
            )
        return web.Response(
            status=421,
            text=f"421 Misdirected Request: this server does not answer to host {shown!r}"
            " (its names are set by web.allowed_hosts)\n",
        )


HOSTS: web.AppKey[HostGate] = web.AppKey("hosts")


@web.middleware
async def host_gate(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Middleware: a request for a name not answered here is a 421 (``HostGate``)."""
    header = request.headers.get(hdrs.HOST)
    gate = request.app[HOSTS]
    estate = request.app[COLLECTOR].estate
    # A request line in absolute form (``GET http://name/...``) names the host that wins
    # over the header (RFC 9112, 3.2.2), and aiohttp builds ``request.url`` from it.
    target = request.host if not request.raw_path.startswith("/") else None
    for name in (header, target):
        if not gate.allows(estate, name):
            assert name is not None
            return gate.refusal(name, request.remote or "unknown")
    return await handler(request)


async def _learn_machine_names(app: web.Application) -> None:
    app[HOSTS].machine = await asyncio.to_thread(machine_names)


def make_app(
    collector: Collector, *, clock: Callable[[], float] = time.monotonic
) -> web.Application:
    """The collector's web app. ``clock``: the monotonic clock wrong tokens are counted on."""
    # Writes are small JSON bodies; nothing needs a large one. The host gate goes first:
    # a request for a name not ours is answered nothing else.
    app = web.Application(
        middlewares=[host_gate, auth.read_guard()],
        client_max_size=collector.estate.web.max_body_bytes,
    )
    app.on_response_prepare.append(_on_prepare)  # every response, errors and files too
    app.on_startup.append(_learn_machine_names)
    app[COLLECTOR] = collector
    refused = collector.metrics.web_requests_refused
    app[HOSTS] = HostGate(refused.labels("host").inc)
    app[auth.ATTEMPTS] = auth.Attempts(clock=clock, on_refused=refused.labels("tokens").inc)
    app[STATUS_BODY] = BodyCache()
    app[STATUS_JSON] = StatusBody()
    app[METRICS_BODY] = BodyCache()
    app[auth.TOKENS] = auth.Tokens.from_config(collector.estate.web)
    add_board(app, collector)  # "/", /board/..., /static/...
    add_api(app)
    app.router.add_get("/api/v1/status", api_status)
    app.router.add_get("/api/v1/report", api_report)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 5\r\n"
    b"Connection: close\r\n\r\n"
)


#: The listen backlog: also the most one burst of connects can overshoot the cap by.
_BACKLOG = 128


class _Busy(asyncio.Protocol):
    """A connection over the cap: told 503 and closed at once, never read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_BUSY)
        transport.close()


#: Requests refused unparsed, logged at most once a minute with how many (a port scanner's
#: garbage would otherwise be a line per connection).
_BAD_REQUESTS = Sparse(60.0)


class _QuietHandler(RequestHandler):
    """aiohttp's handler of one connection, answering a request it could not parse without
    what it could not parse. aiohttp's own 400 quoted the offending header and logged it
    with a traceback: a bad byte after a bearer token put the token in the response and,
    at ERROR, in the log. A handler's own failure (500) keeps aiohttp's handling."""

    __slots__ = ()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            failed = super().handle_error(request, status, exc, message)
            harden(failed)  # never through the app's response hook
            return failed
        kind = type(exc).__name__ if exc is not None else "unparsable request"
        if count := _BAD_REQUESTS.due():
            log.info(
                "bad request from %s refused (%d, %s); %d refused so (at most one such line"
                " a minute)",
                request.remote,
                status,
                kind,
                count,
            )
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Bad Request"
        response = web.Response(status=status, text=f"{status} {phrase}: {kind}\n")
        harden(response)
        response.force_close()
        return response


class CappedSite(web.TCPSite):
    """A TCPSite that answers at most ``max_connections`` connections at once (issue 15):
    idle sockets beyond that can no longer use up the process's file descriptors, which
    once made /healthz time out while the log filled with "Too many open files"."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        max_connections: int,
        on_refused: Callable[[], None],
    ) -> None:
        super().__init__(runner, host, port)
        self._max_connections = max_connections
        self._on_refused = on_refused

    async def start(self) -> None:
        # TCPSite.start with our protocol factory in front of the runner's server.
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.BaseProtocol:
            # The server registers a connection a moment after this (in the accept task),
            # so one burst of simultaneous connects can overshoot the cap by at most the
            # listen backlog: bounded, and far below LimitNOFILE.
            if len(server.connections) >= self._max_connections:
                self._on_refused()
                return _Busy()
            handler = server()
            # The server's own handler, made quiet (no attributes: the class has slots).
            handler.__class__ = _QuietHandler
            return handler

        self._server = await loop.create_server(protocol, self._host, self._port, backlog=_BACKLOG)
        self._bound_port = self._server.sockets[0].getsockname()[1]


async def start_web(collector: Collector) -> web.AppRunner:
    """The status page, API and /metrics, listening, with every limit in one place: header
    and idle timeout (a connection that sends no complete request head, or idles, is
    closed), request line and header sizes, body size and how long an unread body may
    trickle in, and the connection cap. The caller owns ``cleanup()``."""
    cfg = collector.estate.web
    runner = web.AppRunner(
        make_app(collector),
        access_log=None,
        # aiohttp arms this at connection start and re-arms it only after a response, so it
        # is the header timeout as well as the idle one.
        keepalive_timeout=cfg.idle_timeout,
        lingering_time=cfg.body_timeout,
        max_line_size=8190,
        max_field_size=8190,
        max_headers=64,
    )
    await runner.setup()
    try:
        site = CappedSite(
            runner,
            cfg.listen,
            cfg.port,
            max_connections=cfg.max_connections,
            on_refused=collector.metrics.web_connections_refused.inc,
        )
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
