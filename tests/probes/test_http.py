"""HTTP probe against real aiohttp servers on loopback, plain and HTTPS with a test CA."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from probe_peers import Certs, Pair, free_port
from pydantic import ValidationError

from availmon.errors import StartupError
from probes import http
from probes.registry import REGISTRY
from tests.peers import write_secret

ServerFactory = Callable[..., Awaitable[TestServer]]
TOKEN = "s3cret-token"


def opts(**raw: Any) -> http.Options:
    return REGISTRY["http"].parse_options(raw)


def make_app(never: asyncio.Event, seen: list[str] | None = None) -> web.Application:
    async def ok(request: web.Request) -> web.Response:
        if seen is not None:
            seen.append(request.headers.get("Authorization", ""))
        return web.Response(text="hello availmon, all systems go")

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="status")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/ok")

    async def away(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def auth(request: web.Request) -> web.Response:
        # Echo what arrived, so the test sees the exact header the probe sent.
        header = request.headers.get("Authorization", "")
        if not header:
            return web.Response(status=401, text="no credentials")
        return web.Response(text=f"authorization={header} x-site={request.headers.get('X-Site')}")

    async def slow(request: web.Request) -> web.Response:
        await never.wait()  # never set during the test: the probe must hit its timeout
        return web.Response(text="too late")

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/away", away)
    app.router.add_get("/loop", loop)
    app.router.add_get("/auth", auth)
    app.router.add_get("/slow", slow)
    return app


@pytest.fixture
async def never() -> AsyncIterator[asyncio.Event]:
    event = asyncio.Event()
    yield event
    event.set()  # lets the slow handler finish so that server shutdown does not wait for it


@pytest.fixture
async def site(aiohttp_server: ServerFactory, never: asyncio.Event) -> str:
    server = await aiohttp_server(make_app(never))
    return f"http://127.0.0.1:{server.port}"


async def https_site(
    aiohttp_server: ServerFactory, never: asyncio.Event, pair: Pair, seen: list[str] | None = None
) -> str:
    server = await aiohttp_server(make_app(never, seen), ssl=pair.server_context())
    return f"https://127.0.0.1:{server.port}"


@pytest.mark.parametrize(
    ("path", "raw", "ok", "error"),
    [
        ("/ok", {}, True, None),
        ("/status/503", {}, False, "HTTP 503"),
        ("/status/404", {}, False, "HTTP 404"),
        ("/status/404", {"expect_status": [404]}, True, None),
        ("/status/404", {"expect_status": 404}, True, None),  # one code, as a config may say
        ("/ok", {"expect_status": [201, 202]}, False, "HTTP 200"),
        ("/ok", {"body_contains": "systems go"}, True, None),
        ("/ok", {"body_contains": "outage"}, False, "body does not contain 'outage'"),
        ("/ok", {"body_regex": r"all \w+ go"}, True, None),
        ("/ok", {"body_regex": r"^all"}, False, "body does not match '^all'"),
        (
            "/ok",
            {"max_body_bytes": 5, "body_contains": "availmon"},
            False,
            "body does not contain 'availmon'",
        ),
        ("/redirect", {}, True, None),
        ("/redirect", {"follow_redirects": False}, False, "HTTP 302"),
        ("/redirect", {"follow_redirects": False, "expect_status": [302]}, True, None),
    ],
)
async def test_plain_http(
    site: str, path: str, raw: dict[str, Any], ok: bool, error: str | None
) -> None:
    result = await http.probe(site + path, 5, opts(**raw))
    assert (result.ok, result.error) == (ok, error)
    assert result.latency is not None
    assert result.details["status"] in (200, 302, 404, 503)


async def test_redirect_loop_stops_at_max_redirects(site: str) -> None:
    result = await http.probe(site + "/loop", 5, opts(max_redirects=3))
    assert (result.ok, result.error) == (False, "too many redirects (more than 3)")


async def test_redirect_details(site: str) -> None:
    followed = await http.probe(site + "/redirect", 5, opts())
    assert followed.details["redirects"] == 1
    assert followed.details["url"] == site + "/ok"
    stopped = await http.probe(site + "/redirect", 5, opts(follow_redirects=False))
    assert stopped.details["location"] == "/ok"


async def test_connection_refused() -> None:
    result = await http.probe(f"http://127.0.0.1:{free_port()}/", 5, opts())
    assert (result.ok, result.error, result.latency) == (False, "connection refused", None)


async def test_slow_server_hits_timeout(site: str) -> None:
    result = await http.probe(site + "/slow", 0.3, opts())
    assert (result.ok, result.error) == (False, "timeout after 0.3 s")


async def test_basic_auth_header_sent(site: str, tmp_path: Path) -> None:
    secret = tmp_path / "password"
    write_secret(secret, "pa55word\n")  # trailing newline as editors leave it: stripped
    expected = "Basic " + base64.b64encode(b"probe:pa55word").decode()
    options = opts(
        username="probe",
        password_file=str(secret),
        headers={"X-Site": "ccc"},
        body_contains=f"authorization={expected} x-site=ccc",  # the server echoes both
    )
    result = await http.probe(site + "/auth", 5, options)
    assert (result.ok, result.error) == (True, None)


async def test_bearer_token_from_env(site: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVM_TEST_TOKEN", TOKEN)
    options = opts(bearer_token_env="AVM_TEST_TOKEN", body_contains=f"Bearer {TOKEN}")
    result = await http.probe(site + "/auth", 5, options)
    assert result.ok, result.error
    assert TOKEN not in repr(result)  # the secret is sent, never reported


async def test_bearer_token_from_file(site: str, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")  # trailing newline as editors leave it: stripped
    token_file.chmod(0o600)
    options = opts(
        bearer_token_file=str(token_file), body_contains=f"authorization=Bearer {TOKEN} "
    )
    result = await http.probe(site + "/auth", 5, options)
    assert (result.ok, result.error) == (True, None)
    assert TOKEN not in repr(result)  # the secret is sent, never reported


async def test_without_credentials_server_says_401(site: str) -> None:
    result = await http.probe(site + "/auth", 5, opts())
    assert result.error == "HTTP 401"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"username": "u", "password_file": "/nonexistent/availmon-pw"}, "password_file"),
        ({"username": "u", "password_env": "AVM_TEST_UNSET_VAR"}, "AVM_TEST_UNSET_VAR"),
        ({"bearer_token_file": "/nonexistent/availmon-token"}, "bearer_token_file"),
    ],
)
async def test_missing_secret_is_a_startup_error(
    site: str, raw: dict[str, Any], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AVM_TEST_UNSET_VAR", raising=False)
    with pytest.raises(StartupError, match=message):
        await http.probe(site + "/ok", 5, opts(**raw))


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("missing.pem", "cannot read {path}: No such file or directory"),
        ("a-directory", "{path} is not a regular file"),
        ("not-a-cert.pem", "{path} is not a PEM CA bundle (no certificate or crl found)"),
    ],
)
async def test_unusable_ca_file_is_a_startup_error(
    site: str, tmp_path: Path, name: str, reason: str
) -> None:
    """OpenSSL's own words ("No such file or directory", "[X509:
    NO_CERTIFICATE_OR_CRL_FOUND] ...") name neither the key nor the file."""
    (tmp_path / "a-directory").mkdir()
    (tmp_path / "not-a-cert.pem").write_text("not a certificate\n")
    path = tmp_path / name
    with pytest.raises(StartupError) as err:
        await http.probe(site + "/ok", 5, opts(ca_file=str(path)))
    assert str(err.value) == "ca_file: " + reason.format(path=path)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"body_regex": "(unclosed"}, r"invalid regular expression: missing \) at position 9"),
        ({"username": "u"}, "username needs password_file or password_env"),
        ({"password_env": "X"}, "password_file/password_env needs username"),
        ({"username": "u", "password_env": "X", "bearer_token_env": "Y"}, "not both"),
        ({"bearer_token_env": "Y", "headers": {"Authorization": "x"}}, "conflict"),
        ({"expect_status": [999]}, "less than or equal to 599"),
        ({"max_redirects": 0}, "greater than or equal to 1"),
        ({"password": "inline"}, "Extra inputs are not permitted"),
    ],
)
def test_bad_options_are_config_errors(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        opts(**raw)


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("https://example.test/", None),
        ("ftp://example.test/", "expected an http:// or https:// URL, got 'ftp://example.test/'"),
        ("example.test", "expected an http:// or https:// URL, got 'example.test'"),
    ],
)
def test_check_target(target: str, problem: str | None) -> None:
    assert http.check_target(target) == problem


# --- HTTPS -----------------------------------------------------------------------------------


async def test_https_trusted_ca_is_up(
    aiohttp_server: ServerFactory, never: asyncio.Event, certs: Certs
) -> None:
    seen: list[str] = []
    url = await https_site(aiohttp_server, never, certs.good, seen)
    result = await http.probe(url + "/ok", 5, opts(ca_file=str(certs.ca)))
    assert (result.ok, result.degraded, result.error) == (True, False, None)
    assert seen == [""]  # the contrast: a valid certificate gets the request
    assert 363 < result.details["cert_days_left"] < 366


async def test_https_expiring_soon_is_degraded(
    aiohttp_server: ServerFactory, never: asyncio.Event, certs: Certs
) -> None:
    url = await https_site(aiohttp_server, never, certs.soon)
    result = await http.probe(url + "/ok", 5, opts(ca_file=str(certs.ca)))
    assert (result.ok, result.degraded) == (True, True)
    assert result.error == "certificate expires in 5 days"
    relaxed = await http.probe(url + "/ok", 5, opts(ca_file=str(certs.ca), cert_expiry_warn_days=3))
    assert (relaxed.ok, relaxed.degraded, relaxed.error) == (True, False, None)


async def test_https_expired_is_down_and_gets_no_request(
    aiohttp_server: ServerFactory,
    never: asyncio.Event,
    certs: Certs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[str] = []
    url = await https_site(aiohttp_server, never, certs.expired, seen)
    monkeypatch.setenv("AVM_TEST_TOKEN", TOKEN)
    options = opts(ca_file=str(certs.ca), bearer_token_env="AVM_TEST_TOKEN")
    result = await http.probe(url + "/ok", 5, options)
    assert (result.ok, result.error) == (False, "certificate expired 1 day ago")
    assert result.details["cert_days_left"] < 0
    assert seen == []  # no request, and so no token, went to the expired server


@pytest.mark.parametrize(
    ("pair", "raw", "error"),
    [
        ("self_signed", {}, "certificate verify failed: self-signed certificate"),
        ("good", {}, "certificate verify failed: unable to get local issuer certificate"),
        ("self_signed", {"ca_file": "CA"}, "certificate verify failed: self-signed certificate"),
        (
            "wrong_name",
            {"ca_file": "CA"},
            "certificate verify failed: IP address mismatch, "
            "certificate is not valid for '127.0.0.1'.",
        ),
    ],
)
async def test_https_untrusted_is_down(
    aiohttp_server: ServerFactory,
    never: asyncio.Event,
    certs: Certs,
    pair: str,
    raw: dict[str, Any],
    error: str,
) -> None:
    url = await https_site(aiohttp_server, never, getattr(certs, pair))
    raw = {k: str(certs.ca) if v == "CA" else v for k, v in raw.items()}
    result = await http.probe(url + "/ok", 5, opts(**raw))
    assert (result.ok, result.error) == (False, error)


async def test_redirect_to_https_trusts_the_same_ca(
    aiohttp_server: ServerFactory, never: asyncio.Event, site: str, certs: Certs
) -> None:
    secure = await https_site(aiohttp_server, never, certs.soon)
    url = f"{site}/away?to={secure}/ok"
    result = await http.probe(url, 5, opts(ca_file=str(certs.ca)))
    assert (result.ok, result.degraded, result.error) == (
        True,
        True,
        "certificate expires in 5 days",
    )
    assert result.details["url"] == secure + "/ok"
    plain = await http.probe(site + "/ok", 5, opts(ca_file=str(certs.ca)))
    assert "cert_days_left" not in plain.details  # no TLS, nothing measured


@pytest.mark.parametrize("pair", ["self_signed", "expired"])
async def test_https_insecure_skip_verify_is_up_and_unmeasured(
    aiohttp_server: ServerFactory, never: asyncio.Event, certs: Certs, pair: str
) -> None:
    url = await https_site(aiohttp_server, never, getattr(certs, pair))
    result = await http.probe(url + "/ok", 5, opts(insecure_skip_verify=True))
    assert (result.ok, result.error) == (True, None)
    assert result.details["cert_days_left"] is None


# --- one client for every check (issue 9) --------------------------------------------------


async def test_shared_client_trusts_ca_file_and_reads_each_servers_certificate(
    aiohttp_server: ServerFactory, never: asyncio.Event, certs: Certs
) -> None:
    # Two servers with different certificates, probed at once through one client and one
    # shared TLS context: each result carries the certificate of its own connection.
    good = await https_site(aiohttp_server, never, certs.good)
    soon = await https_site(aiohttp_server, never, certs.soon)
    options = opts(ca_file=str(certs.ca))
    async with http.session() as client:
        results = await asyncio.gather(
            *(client.probe(url + "/ok", 5, options) for url in [good, soon] * 10)
        )
        again = await client.probe(good + "/ok", 5, options)
    for result in [*results[0::2], again]:
        assert (result.ok, result.degraded, result.error) == (True, False, None)
        assert 363 < result.details["cert_days_left"] < 366
    for result in results[1::2]:
        assert (result.ok, result.degraded, result.error) == (
            True,
            True,
            "certificate expires in 5 days",
        )
    untrusted = await http.probe(good + "/ok", 5, opts())  # without the CA: not trusted
    assert untrusted.error == "certificate verify failed: unable to get local issuer certificate"


class CountingServer:
    """A TLS HTTP/1.1 server that keeps connections open and counts them; its certificate
    can be swapped between requests (new handshakes get the new one)."""

    def __init__(self, pair: Pair) -> None:
        self.context = pair.server_context()
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0, ssl=self.context)
        port = self.server.sockets[0].getsockname()[1]
        return f"https://127.0.0.1:{port}/"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def test_every_probe_opens_its_own_connection_so_a_bad_handshake_is_seen(
    certs: Certs,
) -> None:
    counting = CountingServer(certs.good)
    options = opts(ca_file=str(certs.ca))
    async with counting as url, http.session() as client:
        first = [await client.probe(url, 5, options) for _ in range(3)]
        # The server now presents a certificate we do not trust: a probe that reused a
        # connection from before would still say "up".
        counting.context.load_cert_chain(certs.self_signed.cert, certs.self_signed.key)
        after = await client.probe(url, 5, options)
    assert [r.ok for r in first] == [True, True, True]
    assert (after.ok, after.error) == (False, "certificate verify failed: self-signed certificate")
    # Three good probes, three connections, although the server would have kept each open
    # (the fourth never got past its handshake, so the server's handler never saw it).
    assert counting.connections == 3


async def test_shared_client_sends_no_cookie_from_one_check_to_another(
    aiohttp_server: ServerFactory,
) -> None:
    seen: list[str] = []

    async def set_cookie(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie", ""))
        response = web.Response(text="ok")
        response.set_cookie("session", "from-another-check")
        return response

    app = web.Application()
    app.router.add_get("/", set_cookie)
    server = await aiohttp_server(app)
    async with http.session() as client:
        for _ in range(2):
            assert (await client.probe(f"http://127.0.0.1:{server.port}/", 5, opts())).ok
    assert seen == ["", ""]
