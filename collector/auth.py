"""Who may read and who may write the collector's web surface (issue 12).

Writes (annotate an outage, mark it planned; later: declare maintenance, acknowledge an
alert) need the bearer token from ``web.token_file`` / ``web.token_env``; with none
configured every write is refused, so a setting that looks like protection always is one.
Reads are open on the internal network unless ``web.read_token_file`` / ``_env`` is set;
then they need that token (or the write token) as a bearer header, or the cookie that the
board's sign-in form sets (from the read token only), because a browser's EventSource
cannot send headers.
Tokens are compared with ``hmac.compare_digest``, in constant time, and are at least
``MIN_TOKEN`` characters long. A client address that sends ``Attempts.limit`` wrong tokens
within ``Attempts.window`` seconds is answered 429 for its next ones, before they are
compared: guessing is slowed to ten tries a minute per address, and a refusal says nothing
of whether the token was right.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import math
import re
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

from aiohttp import web

from availmon.config import WebConfig
from availmon.errors import StartupError
from availmon.logs import SparseBy
from availmon.text import encodable

log = logging.getLogger(__name__)

COOKIE = "availmon_token"
#: The shortest token taken: 16 random characters are out of reach of ten guesses a minute.
MIN_TOKEN = 16
#: Read tokens rotated out that a stale cookie is still recognised by.
RETIRED = 4
USER_HEADER = "X-Availmon-User"
#: Who did it: a person's name or login, as people write it (no control characters, not
#: only blanks); the OpenAPI document publishes the same pattern.
WHO_PATTERN = r"^(?=.*\S)[^\x00-\x1f\x7f]{1,64}$"
_WHO = re.compile(WHO_PATTERN)
#: Paths anyone may fetch even with a read token set: liveness, the sign-in form and the
#: static files it needs.
OPEN_PATHS = ("/healthz", "/board/login")
OPEN_PREFIXES = ("/static/",)


@dataclass
class Tokens:
    """The web's tokens; one object for the app's life, updated in place by a reload."""

    write: str | None
    read: str | None
    #: The read tokens a reload rotated out: a cookie holding one is a browser signed in
    #: before, not a guess (a wall of screens behind one address would otherwise lock it
    #: out at the rotation). At most ``RETIRED`` are kept.
    retired: tuple[str, ...] = ()

    def update(self, other: Tokens) -> None:
        """Take ``other``'s tokens (a config reload rotated them)."""
        if self.read is not None and self.read != other.read:
            self.retired = (self.read, *self.retired)[:RETIRED]
        self.write, self.read = other.write, other.read

    def was_read(self, candidate: str | None) -> bool:
        """Whether ``candidate`` is a read token a reload rotated out."""
        return any(_same(candidate, old) for old in self.retired)

    @classmethod
    def from_config(cls, web_cfg: WebConfig) -> Tokens:
        """Read both secrets once at start; an empty one is a start-up error, never "open",
        and so is a short one, which could be guessed (the error never shows it)."""
        # Trimmed as a token file is (an environment value keeps its blanks, and a bearer
        # header is trimmed when read: " x" could never match), then measured.
        write, read = (
            None if t is None else t.strip() for t in (web_cfg.token(), web_cfg.read_token())
        )
        for key, value in (("web.token", write), ("web.read_token", read)):
            if value is not None and not value:
                raise StartupError(f"{key}_file/{key}_env: the token is empty")
            if value is not None and len(value) < MIN_TOKEN:
                raise StartupError(
                    f"{key}_file/{key}_env: the token is shorter than {MIN_TOKEN} characters:"
                    f" use at least {MIN_TOKEN} random ones (openssl rand -hex 16)"
                )
        return cls(write, read)

    def may_write(self, candidate: str | None) -> bool:
        return _same(candidate, self.write)

    def may_read(self, candidate: str | None) -> bool:
        if self.read is None:
            return True
        return _same(candidate, self.read) or _same(candidate, self.write)

    def may_sign_in(self, candidate: str | None) -> bool:
        """The board's sign-in takes the read token only: the cookie it sets goes with
        every request and stays in the browser, where the write token has no business (a
        write never takes it from the cookie; its form asks for the token each time)."""
        return _same(candidate, self.read)


def _same(candidate: str | None, token: str | None) -> bool:
    if candidate is None or token is None:
        return False
    # A header's bytes that are not UTF-8 come as lone surrogates, which .encode() refused
    # (a 500): as the bytes that came, they are simply not the token.
    try:
        given = candidate.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no byte stands for: not from the wire
        return False
    return hmac.compare_digest(given, token.encode())


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def who(value: str | None) -> str | None:
    """The name a write is recorded under, or None when missing or unfit."""
    # A header's bytes that are not UTF-8: the store cannot keep them (a 500 when it tried).
    if value is None or not _WHO.match(value) or not encodable(value):
        return None
    return value.strip()


TOKENS: web.AppKey[Tokens] = web.AppKey("tokens")


class Attempts:
    """Wrong tokens per client address (sign-in, a write's token, a read's bearer or
    cookie): an address with ``limit`` of them in the last ``window`` seconds is refused
    its next attempts until the oldest is that old, without its token being compared, so
    the refusal tells nothing. One address's success does not clear another's count; at most
    ``max_clients`` addresses are remembered, the longest quiet forgotten first."""

    def __init__(
        self,
        *,
        limit: int = 10,
        window: float = 60.0,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        on_refused: Callable[[], None] = lambda: None,
    ) -> None:
        self.limit, self.window, self.max_clients = limit, window, max_clients
        self.clock, self.on_refused = clock, on_refused
        self._failed: OrderedDict[str, deque[float]] = OrderedDict()
        self._log = SparseBy(60.0, clock=clock)

    def wait(self, client: str) -> int | None:
        """Seconds until ``client`` may try a token again, or None when it may now."""
        times = self._failed.get(client)
        if times is None:
            return None
        now = self.clock()
        while times and now - times[0] >= self.window:
            times.popleft()
        if not times:
            del self._failed[client]
            return None
        if len(times) < self.limit:
            return None
        return max(1, math.ceil(times[0] + self.window - now))

    def refused(self, client: str) -> int | None:
        """As ``wait``, and a refusal is counted and logged."""
        wait = self.wait(client)
        if wait is not None:
            self.on_refused()
            if count := self._log.due(client):
                log.warning(
                    "token attempts from %s refused (429) for %d s: %d wrong tokens within"
                    " %g s; %d refused so (at most one such line a minute per address)",
                    client,
                    wait,
                    self.limit,
                    self.window,
                    count,
                )
        return wait

    def failed(self, client: str) -> None:
        """Count a wrong token from ``client``."""
        times = self._failed.pop(client, None)
        if times is None:
            times = deque(maxlen=self.limit)
        times.append(self.clock())
        self._failed[client] = times  # the most recent last: the first forgotten is the oldest
        while len(self._failed) > self.max_clients:
            self._failed.popitem(last=False)


ATTEMPTS: web.AppKey[Attempts] = web.AppKey("token_attempts")


def client(request: web.Request) -> str:
    """The address attempts are counted by (behind a proxy: the proxy's)."""
    return client_key(request.remote or "unknown")


def client_key(remote: str) -> str:
    """An IPv6 client's /64, else its address: one host is given a /64 and can send from any
    address in it, which would make ten tries a minute per address no limit at all."""
    try:
        ip = ipaddress.ip_address(remote)
    except ValueError:
        return remote
    if ip.version == 6 and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return remote


def too_many(wait: int) -> web.HTTPTooManyRequests:
    """The 429 for an address over the limit of wrong tokens."""
    return web.HTTPTooManyRequests(
        text=json.dumps(
            {"error": f"too many wrong tokens from this address: try again in {wait} s"}
        ),
        content_type="application/json",
        headers={"Retry-After": str(wait)},
    )


def _check_attempt(request: web.Request) -> None:
    """Raise the 429 when the client may not try a token now."""
    wait = request.app[ATTEMPTS].refused(client(request))
    if wait is not None:
        raise too_many(wait)


def read_guard() -> Callable[..., Awaitable[web.StreamResponse]]:
    """Middleware: with a read token set, every read needs it (or the write token)."""

    @web.middleware
    async def guard(
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        tokens = request.app[TOKENS]
        path = request.path
        if tokens.read is None or path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return await handler(request)
        given = bearer(request)
        cookie = request.cookies.get(COOKIE) or None
        candidate = given or cookie
        if candidate is not None:
            _check_attempt(request)
            if tokens.may_read(candidate):
                return await handler(request)
            if given is not None or not tokens.was_read(cookie):
                request.app[ATTEMPTS].failed(client(request))
        # A wrong cookie (from before the read token was rotated) is dropped at once, or
        # each of the page's requests would count as a wrong token and lock its address out.
        stale = given is None and cookie is not None
        if "text/html" in request.headers.get("Accept", "") and request.method == "GET":
            redirect = web.HTTPSeeOther(f"/board/login?next={quote(path)}")
            if stale:
                redirect.del_cookie(COOKIE, path="/")
            raise redirect
        refusal = web.json_response(
            {"error": "reading needs a token: Authorization: Bearer <web.read_token>"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="availmon"'},
        )
        if stale:
            refusal.del_cookie(COOKIE, path="/")
        return refusal

    return guard


def writer(request: web.Request, token: str | None, name: str | None) -> str:
    """The name to record a write under, after checking the write token.

    Raises the HTTP error to send: 403 when writes are disabled (no token configured), 429
    for a token from an address with too many wrong ones, 401 for a missing or wrong token,
    400 when the name is missing.
    """
    tokens = request.app[TOKENS]
    if tokens.write is None:
        raise web.HTTPForbidden(
            text='{"error": "writes are disabled: set web.token_file to allow them"}',
            content_type="application/json",
        )
    if token is not None:
        _check_attempt(request)
    if not tokens.may_write(token):
        if token is not None:
            request.app[ATTEMPTS].failed(client(request))
        raise web.HTTPUnauthorized(
            text='{"error": "writing needs the token: Authorization: Bearer <web.token>"}',
            content_type="application/json",
            headers={"WWW-Authenticate": 'Bearer realm="availmon"'},
        )
    person = who(name)
    if person is None:
        raise web.HTTPBadRequest(
            text='{"error": "say who is writing: the X-Availmon-User header (1-64'
            ' printable characters)"}',
            content_type="application/json",
        )
    return person
