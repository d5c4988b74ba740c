"""HTTP(S) probe: status code, body content, certificate dates and time to the full response.

Failures explain themselves ("HTTP 503", "body does not contain 'ok'", "certificate expired 3
days ago"), as Gatus's conditions do. The body is read up to ``max_body_bytes`` so that a huge
or endless response cannot hold the probe beyond its bound.

This module is the check's options and target rule, importable without aiohttp so that
``availmon --help`` and ``availmon config check`` do not pay for it (issue 9); the client is
in :mod:`probes.http_io`, imported when an HTTP check first runs.
"""

from __future__ import annotations

import re
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, field_validator, model_validator

from probes.base import ProbeResult, ProbeSession, TLSOptions
from probes.patterns import Pattern

StatusCode = Annotated[int, Field(ge=100, le=599)]
#: RFC 7230 3.2.6: a header name is a token.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: Control characters other than HTAB (RFC 7230 3.2 allows it in a value): a CR or LF
#: would start a header of its own, so the client refuses to send any of them.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def header_value_problem(value: str) -> str | None:
    """Why ``value`` cannot be sent as a header value, naming the character, never the value
    (it may be a secret)."""
    found = _CONTROL.search(value)
    if found is None:
        return None
    return f"a header value is one line without control characters (found {found.group()!r})"


def _header_name(name: str) -> str:
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"{name!r} is not a header name: use letters, digits and !#$%&'*+-.^_`|~")
    return name


def _header_value(value: str) -> str:
    problem = header_value_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


HeaderName = Annotated[str, AfterValidator(_header_name)]
HeaderValue = Annotated[str, AfterValidator(_header_value)]


class Options(TLSOptions):
    method: Annotated[str, Field(pattern=r"^[A-Z]+$")] = "GET"
    #: Accepted status codes; empty means any 2xx.
    expect_status: tuple[StatusCode, ...] = ()
    #: The body must contain this text (checked on the first ``max_body_bytes``).
    body_contains: str | None = None
    #: The body must match this regular expression (searched, not anchored).
    body_regex: Pattern | None = None
    max_body_bytes: Annotated[int, Field(ge=1)] = 1_048_576
    follow_redirects: bool = True
    max_redirects: Annotated[int, Field(ge=1, le=50)] = 10
    #: Extra request headers, e.g. ``headers = { Host = "intranet.example" }``; never
    #: credentials (``Authorization``, ``Cookie``, API keys): see ``header_files``.
    headers: dict[HeaderName, HeaderValue] = Field(default_factory=dict)
    #: Headers whose values are secrets, each read from a file at every probe, e.g.
    #: ``header_files = { X-Api-Key = "/etc/availmon/api-key" }``.
    header_files: dict[HeaderName, Path] = Field(default_factory=dict)
    #: Basic auth: ``username`` plus the password from a file or an environment variable.
    username: str | None = None
    password_file: Path | None = None
    password_env: str | None = None
    #: Bearer token from a file or an environment variable.
    bearer_token_file: Path | None = None
    bearer_token_env: str | None = None

    @field_validator("expect_status", mode="before")
    @classmethod
    def _one_status(cls, value: Any) -> Any:
        """``expect_status = 200`` means ``[200]``: one code is the common case."""
        return (value,) if isinstance(value, int) and not isinstance(value, bool) else value

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
    expected = f"expected an http:// or https:// URL, got {target!r}"
    try:
        parts = urlsplit(target)
    except ValueError:  # unbalanced brackets, or no IP address inside them
        return f"{expected}: a bracketed host must be an IPv6 address, as in http://[::1]/"
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host or any(c.isspace() for c in host):
        return expected
    try:
        port = parts.port  # None when not given ("host" or "host:")
    except ValueError:  # not a number, or above 65535
        port = -1
    if port is not None and not 0 < port < 65536:
        return f"expected a port 1-65535, got {parts.netloc.rpartition(':')[2]!r} in {target!r}"
    return None


async def probe(target: str, timeout: float, options: Options) -> ProbeResult:
    """One probe with a client of its own (``availmon probe``); checks share a session."""
    from probes import http_io

    return await http_io.probe(target, timeout, options)


def session() -> AbstractAsyncContextManager[ProbeSession]:
    """The agent's one HTTP client: a connection per probe, TLS contexts built once."""
    from probes import http_io

    return http_io.HttpClient()
