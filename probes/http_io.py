"""The HTTP probe's client (aiohttp), apart from :mod:`probes.http` so that reading a config
does not import it.

One :class:`HttpClient` serves every HTTP check of an agent (issue 9): its TLS contexts (the
system CAs take ~46 ms of CPU to load) and its aiohttp session and resolver are built once.
Every probe still opens a new connection and closes it after the answer (``force_close``): a
reused connection would hide a failed TCP or TLS handshake, which is what a probe is for.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import contextlib
import os
import re
import ssl
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import aiohttp
from aiohttp import http_exceptions

from availmon.errors import StartupError
from availmon.secrets import read_secret_file, redact_url, resolve_secret
from probes import patterns
from probes.base import (
    Poll,
    ProbeResult,
    fail,
    peer_text,
    timeout_text,
)
from probes.http import Options, header_value_problem
from probes.tls import (
    CERT_DATE_ERRORS,
    CertVerdict,
    RecordingContext,
    cert_verdict,
    last_peer,
    recording_tls,
    tls_context,
    tls_error_text,
)


def _status_ok(status: int, options: Options) -> bool:
    if options.expect_status:
        return status in options.expect_status
    return 200 <= status < 300


#: The charsets a body is decoded with, by codec name (``codecs.lookup(...).name``): the
#: ordinary text encodings, each decoded in one linear pass. The others Python knows are
#: refused (decoded as UTF-8): punycode is quadratic (a 1 MB body held the event loop
#: 22 s), idna and undefined raise even with errors="replace", the *_escape codecs and
#: utf-7 are not what a web page is written in, and base64, zlib, rot-13 are not charsets.
_TEXT_CHARSET = re.compile(
    r"ascii|utf-(?:8|8-sig|16|16-[bl]e|32|32-[bl]e)"
    r"|iso8859-\d+|cp\d+|mac-[a-z0-9]+|koi8-[rtu]|kz1048|ptcp154|tis-620|hp-roman8|palmos"
    r"|big5(?:hkscs)?|gb2312|gbk|gb18030|hz|johab|euc_(?:jp|kr|jis_2004|jisx0213)"
    r"|shift_jis(?:_2004|x0213)?|iso2022_(?:jp(?:_1|_2|_2004|_3|_ext)?|kr)"
)


def _body_codec(charset: str | None) -> str:
    """The codec for a body the server says is in ``charset``: UTF-8 unless it is a text
    charset Python knows (``_TEXT_CHARSET``)."""
    if charset:
        try:
            name = codecs.lookup(charset).name
        except (LookupError, ValueError):  # unknown to Python, or a NUL in the name
            return "utf-8"
        if _TEXT_CHARSET.fullmatch(name):
            return name
    return "utf-8"


def _decode_body(raw_body: bytes, charset: str | None) -> str:
    """The body as text; never raises, whatever the server said its charset was."""
    try:
        return raw_body.decode(_body_codec(charset), errors="replace")
    except (LookupError, ValueError):  # not expected of an allowed codec; never a crash
        return raw_body.decode("utf-8", errors="replace")


async def _body_problem(body: str, options: Options, seconds: float) -> str | None:
    if options.body_contains is not None and options.body_contains not in body:
        return f"body does not contain {options.body_contains!r}"
    if options.body_regex is None:
        return None
    try:
        found = await patterns.search(options.body_regex, body, seconds)
    except patterns.PatternTimeout:
        return patterns.too_slow(options.body_regex, "the body")
    return None if found else f"body does not match {options.body_regex!r}"


def _secret_headers(options: Options) -> dict[str, str]:
    """Authorization and ``header_files``; reads the secrets now (blocking: run it in a
    thread). A missing or unusable file is a StartupError naming the key, never the value."""
    out = {
        name: _one_line(read_secret_file(path, f"header_files.{name}"), f"header_files.{name}")
        for name, path in options.header_files.items()
    }
    authorization = _authorization(options)
    if authorization is not None:
        out["Authorization"] = authorization
    return out


def _authorization(options: Options) -> str | None:
    """The Authorization header value from the auth options."""
    if options.username is not None:
        password = resolve_secret(options.password_file, options.password_env, "password") or ""
        raw = f"{options.username}:{password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")
    token = resolve_secret(options.bearer_token_file, options.bearer_token_env, "bearer_token")
    if token is None:
        return None
    key = "bearer_token_file" if options.bearer_token_file is not None else "bearer_token_env"
    return f"Bearer {_one_line(token, key)}"


def _one_line(secret: str, key: str) -> str:
    """A secret bound for a header. With a CR or LF inside (a file of two lines) aiohttp
    refuses the request, a crash at every probe: a start-up error naming the key instead,
    never the value, like a missing secret."""
    problem = header_value_problem(secret)
    if problem is not None:
        raise StartupError(f"{key}: {problem}")
    return secret


async def _read_body(response: aiohttp.ClientResponse, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(65536):
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)[:limit]


async def _certificate_dates(
    host: str, port: int, ctx: ssl.SSLContext, options: Options
) -> CertVerdict | None:
    """Handshake again, dates unchecked, only to read them; no request is sent this time."""
    try:
        _reader, writer = await asyncio.open_connection(host, port, ssl=ctx)
    except (OSError, ssl.SSLError):
        return None
    try:
        return cert_verdict(writer.get_extra_info("ssl_object"), options.cert_expiry_warn_days)
    finally:
        writer.transport.abort()


async def _certificate_error(
    client: HttpClient,
    exc: aiohttp.ClientConnectorCertificateError,
    options: Options,
    time_left: float,
) -> ProbeResult:
    """Why the certificate was refused. OpenSSL checked the dates, so that no request (with
    its credentials) goes to a server whose certificate has expired; on a date error we look
    again to say by how much."""
    cause = exc.certificate_error
    if isinstance(cause, ssl.SSLCertVerificationError) and cause.verify_code in CERT_DATE_ERRORS:
        verdict = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.1, time_left)):
                ctx = await client.context(options.ca_file, check_time=False)
                verdict = await _certificate_dates(exc.host, exc.port or 443, ctx, options)
        if verdict is not None and verdict.error is not None:
            return fail(verdict.error, **verdict.details())
    return fail(tls_error_text(cause))


_MALFORMED = "malformed response from server"


def _processing_error(exc: BaseException) -> http_exceptions.HttpProcessingError | None:
    """The parser's own error behind an aiohttp error (the deepest in its chain of causes)."""
    found = None
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, http_exceptions.HttpProcessingError):
            found = cause
        cause = cause.__cause__
    return found


#: The parser's errors in our words, most specific first (aiohttp's subclass some of these).
_PARSER_TEXTS: tuple[tuple[type[http_exceptions.HttpProcessingError], str], ...] = (
    (
        http_exceptions.ContentLengthError,
        "connection closed before the end of the body (Content-Length)",
    ),
    (
        http_exceptions.ContentEncodingError,
        f"{_MALFORMED}: cannot decode the body's Content-Encoding",
    ),
    (http_exceptions.TransferEncodingError, f"{_MALFORMED}: bad chunked encoding"),
    (http_exceptions.LineTooLong, f"{_MALFORMED}: status line or header too long"),
    (http_exceptions.BadStatusLine, f"{_MALFORMED}: bad status line"),
    (http_exceptions.InvalidHeader, f"{_MALFORMED}: invalid header"),
)


def _parser_text(error: http_exceptions.HttpProcessingError) -> str:
    """What was wrong with the answer, in our words; the peer's bytes (which aiohttp puts in
    its messages, 40 kB of them for a long status line) only as a short quote."""
    for kind, text in _PARSER_TEXTS:
        if isinstance(error, kind):
            return text
    # llhttp's reason comes first ("Invalid header token:\n\n  b'...'"); the pure-Python
    # parser's may hold the peer's bytes, hence the short quote.
    reason = error.message.split("\n", 1)[0].strip().rstrip(":").strip()
    if not reason:
        return _MALFORMED
    return f"{_MALFORMED}: {peer_text(reason[:1].lower() + reason[1:], 80)}"


def _without_userinfo(url: str) -> str:
    """``url`` without its ``user:password@``, found by hand: the URL may be malformed."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    host = rest[:end].rpartition("@")[2]
    return f"{scheme}://{host}{rest[end:]}"


#: The longest URL kept in a result's details.
URL_MAX_CHARS = 2000


def _peer_url(url: object) -> str:
    """A URL the peer sent (a redirect's Location), fit for an error: no userinfo, secret
    query values hidden, control characters escaped, cut short."""
    text = _without_userinfo(str(url))
    return peer_text(redact_url(text) or text, 80)


def _detail_url(url: str) -> str:
    """A URL the peer chose, for the result's details (kept with the check's last result,
    shown by ``availmon probe``): secret query values hidden, escaped, at most a URL's
    usual length, as the peer may send a header of kilobytes."""
    return peer_text(redact_url(url) or url, URL_MAX_CHARS)


def _client_error_text(exc: aiohttp.ClientError) -> str:
    """A short error of our own for an aiohttp error: ``str(exc)`` quotes the peer at length
    (a status line of 8000 bytes, a redirect's URL with its password)."""
    if isinstance(exc, aiohttp.NonHttpUrlRedirectClientError):
        return f"redirect to a non-HTTP URL: {_peer_url(exc.args[0] if exc.args else '')}"
    if isinstance(exc, aiohttp.InvalidUrlRedirectClientError):
        return f"redirect to an invalid URL: {_peer_url(exc.url)}"
    if isinstance(exc, aiohttp.InvalidURL):
        return f"invalid URL: {_peer_url(exc.url)}"
    if isinstance(exc, aiohttp.NonHttpUrlClientError):
        return f"not an HTTP URL: {_peer_url(exc.args[0] if exc.args else '')}"
    error = _processing_error(exc)
    if error is not None:
        return _parser_text(error)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "incomplete response body"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server disconnected before a complete response"
    if isinstance(exc, aiohttp.ClientResponseError):
        return _MALFORMED
    if isinstance(exc, aiohttp.ClientOSError) and exc.errno:
        return os.strerror(exc.errno).lower()
    if isinstance(exc, aiohttp.ClientConnectionError):
        return "connection lost"
    return f"HTTP client error ({type(exc).__name__})"


def _connection_error(exc: aiohttp.ClientConnectorError) -> str:
    if isinstance(exc.os_error, ssl.SSLError):
        return tls_error_text(exc.os_error)
    if isinstance(exc.os_error, ConnectionRefusedError):
        return "connection refused"
    errno = exc.os_error.errno if exc.os_error else None
    return os.strerror(errno).lower() if errno else str(exc)


_ContextKey = tuple[Path | None, bool, bool]


class HttpClient:
    """The agent's HTTP client: one aiohttp session, one context per trust setting.

    ::

        async with HttpClient() as client:
            result = await client.probe(url, timeout, options)
    """

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._contexts: dict[_ContextKey, RecordingContext] = {}
        self._building = asyncio.Lock()

    async def __aenter__(self) -> Self:
        connector = aiohttp.TCPConnector(
            force_close=True,  # a new connection per probe, closed after it: see the docstring
            limit=0,  # checks are bounded by the config; a pool limit would only queue them
        )
        # No cookie jar: one check's cookies must not change what another check sees.
        self._session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar()
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def context(
        self, ca_file: Path | None, insecure: bool = False, *, check_time: bool = True
    ) -> RecordingContext:
        """The shared context for these trust settings, built (in a thread) on first use.

        A ``ca_file`` is read once per agent run: replacing a private CA needs a restart.
        """
        key = (ca_file, insecure, check_time)
        ctx = self._contexts.get(key)
        if ctx is None:
            async with self._building:  # 100 checks starting at once build it once, not 100x
                ctx = self._contexts.get(key)
                if ctx is None:
                    ctx = await asyncio.to_thread(
                        tls_context, ca_file, insecure, check_time=check_time
                    )
                    self._contexts[key] = ctx
        return ctx

    async def probe_group(self, polls: Sequence[Poll], timeout: float) -> list[ProbeResult]:
        return list(
            await asyncio.gather(*(self.probe(p.target, timeout, p.options) for p in polls))
        )

    async def probe(
        self,
        target: str,
        timeout: float,
        options: Options,
        *,
        previous: ProbeResult | None = None,
    ) -> ProbeResult:
        if self._session is None:
            raise RuntimeError("HttpClient.probe outside 'async with'")
        headers = dict(options.headers)
        if _needs_secret(options):  # StartupError if a secret is missing
            headers.update(await asyncio.to_thread(_secret_headers, options))
        # Given for http:// targets too: a redirect to https:// must trust the same CA.
        ssl_ctx = await self.context(options.ca_file, options.insecure_skip_verify)
        started = time.perf_counter()
        try:
            with recording_tls() as made:
                async with self._session.request(
                    options.method,
                    target,
                    headers=headers,
                    allow_redirects=options.follow_redirects,
                    max_redirects=options.max_redirects,
                    ssl=ssl_ctx,
                    timeout=aiohttp.ClientTimeout(total=timeout),
                ) as response:
                    raw_body = await _read_body(response, options.max_body_bytes)
                    status = response.status
                    final_url = str(response.url)
                    redirects = len(response.history)
                    location = response.headers.get("Location")
                    charset = response.charset
        except TimeoutError:
            return fail(timeout_text(timeout))
        except aiohttp.ClientConnectorCertificateError as exc:
            left = timeout - (time.perf_counter() - started)
            return await _certificate_error(self, exc, options, left)
        except aiohttp.ClientConnectorError as exc:
            return fail(_connection_error(exc))
        except aiohttp.TooManyRedirects:
            return fail(f"too many redirects (more than {options.max_redirects})")
        except aiohttp.ClientError as exc:
            return fail(_client_error_text(exc))
        latency = time.perf_counter() - started
        cert = None
        if urlsplit(final_url).scheme == "https":
            peer = last_peer(made, urlsplit(final_url).hostname)
            cert = cert_verdict(peer, options.cert_expiry_warn_days)
        left = timeout - (time.perf_counter() - started)
        return await _judge(
            options, latency, status, final_url, redirects, location, cert, raw_body, charset, left
        )


def _needs_secret(options: Options) -> bool:
    return (
        options.username is not None
        or bool(options.header_files)
        or options.bearer_token_file is not None
        or options.bearer_token_env is not None
    )


async def _judge(
    options: Options,
    latency: float,
    status: int,
    final_url: str,
    redirects: int,
    location: str | None,
    cert: CertVerdict | None,
    raw_body: bytes,
    charset: str | None,
    left: float,
) -> ProbeResult:
    """The verdict on a complete answer: certificate, status, body, in that order."""
    details: dict[str, Any] = {"status": status}
    if redirects:
        details.update(redirects=redirects, url=_detail_url(final_url))
    if location is not None and not 300 <= status < 400:
        location = None
    if location is not None:
        details["location"] = _detail_url(location)
    if cert is not None:
        details.update(cert.details())
    if cert is not None and cert.error is not None:
        return ProbeResult(ok=False, latency=latency, error=cert.error, details=details)
    if not _status_ok(status, options):
        return ProbeResult(ok=False, latency=latency, error=f"HTTP {status}", details=details)
    # Decoded only for a body check: a probe without one reads no text at all.
    problem = None
    if options.body_contains is not None or options.body_regex is not None:
        problem = await _body_problem(_decode_body(raw_body, charset), options, left)
    if problem is not None:
        return ProbeResult(ok=False, latency=latency, error=problem, details=details)
    if cert is not None and cert.warning is not None:
        return ProbeResult(
            ok=True, latency=latency, degraded=True, error=cert.warning, details=details
        )
    return ProbeResult(ok=True, latency=latency, details=details)


async def probe(target: str, timeout: float, options: Options) -> ProbeResult:
    """One probe with a client of its own (``availmon probe``, tests)."""
    async with HttpClient() as client:
        return await client.probe(target, timeout, options)
