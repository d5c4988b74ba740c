"""HTTP(S) probe: status code, body content, certificate dates and time to the full response.

Failures explain themselves ("HTTP 503", "body does not contain 'ok'", "certificate expired 3
days ago"), as Gatus's conditions do. The body is read up to ``max_body_bytes`` so that a huge
or endless response cannot hold the probe beyond its bound.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import ssl
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import aiohttp
from pydantic import Field, field_validator, model_validator

from availmon.secrets import read_secret_file, redact_url, resolve_secret
from probes.base import (
    CERT_DATE_ERRORS,
    CertVerdict,
    ProbeResult,
    TLSOptions,
    cert_verdict,
    compile_regex,
    fail,
    timeout_text,
    tls_context,
    tls_error_text,
)

StatusCode = Annotated[int, Field(ge=100, le=599)]


class Options(TLSOptions):
    method: Annotated[str, Field(pattern=r"^[A-Z]+$")] = "GET"
    #: Accepted status codes; empty means any 2xx.
    expect_status: tuple[StatusCode, ...] = ()
    #: The body must contain this text (checked on the first ``max_body_bytes``).
    body_contains: str | None = None
    #: The body must match this regular expression (searched, not anchored).
    body_regex: re.Pattern[str] | None = None
    max_body_bytes: Annotated[int, Field(ge=1)] = 1_048_576
    follow_redirects: bool = True
    max_redirects: Annotated[int, Field(ge=1, le=50)] = 10
    #: Extra request headers, e.g. ``headers = { Host = "intranet.example" }``; never
    #: credentials (``Authorization``, ``Cookie``, API keys): see ``header_files``.
    headers: dict[str, str] = Field(default_factory=dict)
    #: Headers whose values are secrets, each read from a file at every probe, e.g.
    #: ``header_files = { X-Api-Key = "/etc/availmon/api-key" }``.
    header_files: dict[str, Path] = Field(default_factory=dict)
    #: Basic auth: ``username`` plus the password from a file or an environment variable.
    username: str | None = None
    password_file: Path | None = None
    password_env: str | None = None
    #: Bearer token from a file or an environment variable.
    bearer_token_file: Path | None = None
    bearer_token_env: str | None = None

    _compile_body_regex = field_validator("body_regex", mode="before")(compile_regex)

    @model_validator(mode="after")
    def _auth_is_consistent(self) -> Options:
        password = self.password_file is not None or self.password_env is not None
        bearer = self.bearer_token_file is not None or self.bearer_token_env is not None
        if self.password_file is not None and self.password_env is not None:
            raise ValueError("give password_file or password_env, not both")
        if self.bearer_token_file is not None and self.bearer_token_env is not None:
            raise ValueError("give bearer_token_file or bearer_token_env, not both")
        if password and self.username is None:
            raise ValueError("password_file/password_env needs username")
        if self.username is not None and not password:
            raise ValueError("username needs password_file or password_env")
        if bearer and self.username is not None:
            raise ValueError("use basic auth (username) or a bearer token, not both")
        if (self.username is not None or bearer) and any(
            k.lower() == "authorization" for k in [*self.headers, *self.header_files]
        ):
            raise ValueError("an Authorization header and auth options conflict")
        both = {k.lower() for k in self.headers} & {k.lower() for k in self.header_files}
        if both:
            raise ValueError(f"header {sorted(both)[0]!r} is in both headers and header_files")
        return self


def check_target(target: str) -> str | None:
    parts = urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"expected an http:// or https:// URL, got {target!r}"
    return None


def _secret_headers(options: Options) -> dict[str, str]:
    """Authorization and ``header_files``; reads the secrets now (blocking: run it in a
    thread). A missing or unusable file is a StartupError naming the key, never the value."""
    out = {
        name: read_secret_file(path, f"header_files.{name}")
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
    return f"Bearer {token}" if token is not None else None


def _status_ok(status: int, options: Options) -> bool:
    if options.expect_status:
        return status in options.expect_status
    return 200 <= status < 300


def _body_problem(body: str, options: Options) -> str | None:
    if options.body_contains is not None and options.body_contains not in body:
        return f"body does not contain {options.body_contains!r}"
    if options.body_regex is not None and not options.body_regex.search(body):
        return f"body does not match {options.body_regex.pattern!r}"
    return None


async def _read_body(response: aiohttp.ClientResponse, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(65536):
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)[:limit]


async def _certificate_dates(host: str, port: int, options: Options) -> CertVerdict | None:
    """Handshake again, dates unchecked, only to read them; no request is sent this time."""
    ctx = await asyncio.to_thread(tls_context, options.ca_file, check_time=False)
    try:
        _reader, writer = await asyncio.open_connection(host, port, ssl=ctx)
    except (OSError, ssl.SSLError):
        return None
    try:
        return cert_verdict(writer.get_extra_info("ssl_object"), options.cert_expiry_warn_days)
    finally:
        writer.transport.abort()


async def _certificate_error(
    exc: aiohttp.ClientConnectorCertificateError, options: Options, time_left: float
) -> ProbeResult:
    """Why the certificate was refused. OpenSSL checked the dates, so that no request (with
    its credentials) goes to a server whose certificate has expired; on a date error we look
    again to say by how much."""
    cause = exc.certificate_error
    if isinstance(cause, ssl.SSLCertVerificationError) and cause.verify_code in CERT_DATE_ERRORS:
        verdict = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.1, time_left)):
                verdict = await _certificate_dates(exc.host, exc.port or 443, options)
        if verdict is not None and verdict.error is not None:
            return fail(verdict.error, **verdict.details())
    return fail(tls_error_text(cause))


def _connection_error(exc: aiohttp.ClientConnectorError) -> str:
    if isinstance(exc.os_error, ssl.SSLError):
        return tls_error_text(exc.os_error)
    if isinstance(exc.os_error, ConnectionRefusedError):
        return "connection refused"
    errno = exc.os_error.errno if exc.os_error else None
    return os.strerror(errno).lower() if errno else str(exc)


async def probe(target: str, timeout: float, options: Options) -> ProbeResult:
    headers = dict(options.headers)
    headers.update(await asyncio.to_thread(_secret_headers, options))  # StartupError if missing
    # Built for http:// targets too: a redirect to https:// must trust the same CA.
    ssl_ctx = await asyncio.to_thread(tls_context, options.ca_file, options.insecure_skip_verify)
    started = time.perf_counter()
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    try:
        async with (
            aiohttp.ClientSession(timeout=client_timeout) as session,
            session.request(
                options.method,
                target,
                headers=headers,
                allow_redirects=options.follow_redirects,
                max_redirects=options.max_redirects,
                ssl=ssl_ctx,
            ) as response,
        ):
            raw_body = await _read_body(response, options.max_body_bytes)
            status = response.status
            final_url = str(response.url)
            redirects = len(response.history)
            location = response.headers.get("Location")
            charset = response.charset or "utf-8"
    except TimeoutError:
        return fail(timeout_text(timeout))
    except aiohttp.ClientConnectorCertificateError as exc:
        left = timeout - (time.perf_counter() - started)
        return await _certificate_error(exc, options, left)
    except aiohttp.ClientConnectorError as exc:
        return fail(_connection_error(exc))
    except aiohttp.TooManyRedirects:
        return fail(f"too many redirects (more than {options.max_redirects})")
    except aiohttp.ClientError as exc:
        return fail(str(exc) or type(exc).__name__)
    latency = time.perf_counter() - started

    details: dict[str, Any] = {"status": status}
    if redirects:
        details.update(redirects=redirects, url=redact_url(final_url) or final_url)
    if location is not None and not 300 <= status < 400:
        location = None
    if location is not None:
        details["location"] = redact_url(location) or location
    cert = None
    if urlsplit(final_url).scheme == "https":
        peer = ssl_ctx.peer(urlsplit(final_url).hostname)
        cert = cert_verdict(peer, options.cert_expiry_warn_days)
        details.update(cert.details())

    if cert is not None and cert.error is not None:
        return ProbeResult(ok=False, latency=latency, error=cert.error, details=details)
    if not _status_ok(status, options):
        return ProbeResult(ok=False, latency=latency, error=f"HTTP {status}", details=details)
    try:
        body = raw_body.decode(charset, errors="replace")
    except LookupError:  # a charset Python does not know
        body = raw_body.decode("utf-8", errors="replace")
    problem = _body_problem(body, options)
    if problem is not None:
        return ProbeResult(ok=False, latency=latency, error=problem, details=details)
    if cert is not None and cert.warning is not None:
        return ProbeResult(
            ok=True, latency=latency, degraded=True, error=cert.warning, details=details
        )
    return ProbeResult(ok=True, latency=latency, details=details)
