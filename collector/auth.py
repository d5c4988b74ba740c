"""Who may read and who may write the collector's web surface (issue 12).

Writes (annotate an outage, mark it planned; later: declare maintenance, acknowledge an
alert) need the bearer token from ``web.token_file`` / ``web.token_env``; with none
configured every write is refused, so a setting that looks like protection always is one.
Reads are open on the internal network unless ``web.read_token_file`` / ``_env`` is set;
then they need that token (or the write token) as a bearer header, or the cookie that the
board's sign-in form sets (from the read token only), because a browser's EventSource
cannot send headers.
Tokens are compared with ``hmac.compare_digest``, in constant time.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

from aiohttp import web

from availmon.config import WebConfig
from availmon.errors import StartupError
from availmon.text import encodable

COOKIE = "availmon_token"
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

    def update(self, other: Tokens) -> None:
        """Take ``other``'s tokens (a config reload rotated them)."""
        self.write, self.read = other.write, other.read

    @classmethod
    def from_config(cls, web_cfg: WebConfig) -> Tokens:
        """Read both secrets once at start; an empty one is a start-up error, never "open"."""
        write, read = web_cfg.token(), web_cfg.read_token()
        for key, value in (("web.token", write), ("web.read_token", read)):
            if value is not None and not value.strip():
                raise StartupError(f"{key}_file/{key}_env: the token is empty")
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


def read_guard() -> Callable[..., Awaitable[web.StreamResponse]]:
    """Middleware: with a read token set, every read needs it (or the write token)."""

    @web.middleware
    async def guard(
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        tokens = request.app[TOKENS]
        path = request.path
        if (
            tokens.read is None
            or path in OPEN_PATHS
            or path.startswith(OPEN_PREFIXES)
            or tokens.may_read(bearer(request) or request.cookies.get(COOKIE))
        ):
            return await handler(request)
        if "text/html" in request.headers.get("Accept", "") and request.method == "GET":
            raise web.HTTPSeeOther(f"/board/login?next={quote(path)}")
        return web.json_response(
            {"error": "reading needs a token: Authorization: Bearer <web.read_token>"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="availmon"'},
        )

    return guard


def writer(request: web.Request, token: str | None, name: str | None) -> str:
    """The name to record a write under, after checking the write token.

    Raises the HTTP error to send: 403 when writes are disabled (no token configured), 401
    for a missing or wrong token, 400 when the name is missing.
    """
    tokens = request.app[TOKENS]
    if tokens.write is None:
        raise web.HTTPForbidden(
            text='{"error": "writes are disabled: set web.token_file to allow them"}',
            content_type="application/json",
        )
    if not tokens.may_write(token):
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
