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
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from probes.base import ProbeResult, ProbeSession, TLSOptions, compile_regex

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


async def probe(target: str, timeout: float, options: Options) -> ProbeResult:
    """One probe with a client of its own (``availmon probe``); checks share a session."""
    from probes import http_io

    return await http_io.probe(target, timeout, options)


def session() -> AbstractAsyncContextManager[ProbeSession]:
    """The agent's one HTTP client: a connection per probe, TLS contexts built once."""
    from probes import http_io

    return http_io.HttpClient()
