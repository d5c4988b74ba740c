"""SMTP probe against aiosmtpd on loopback (plain, STARTTLS, implicit TLS) and a refusing peer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from probe_peers import LOOPBACK, Certs, Pair, free_port
from pydantic import ValidationError

from availmon.errors import ConfigError, StartupError
from availmon.probecli import run_probe
from probes import smtp
from probes.registry import REGISTRY

StartSmtp = Callable[..., str]


def opts(**raw: Any) -> smtp.Options:
    return REGISTRY["smtp"].parse_options(raw)


class Sink:
    """An aiosmtpd handler that counts MAIL commands: the probe must never send one."""

    def __init__(self) -> None:
        self.mail_commands = 0

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.mail_commands += 1
        envelope.mail_from = address
        return "250 OK"


@pytest.fixture
def sink() -> Sink:
    return Sink()


@pytest.fixture
def start_smtp(sink: Sink) -> Iterator[StartSmtp]:
    """Starts aiosmtpd servers (in their own thread, as aiosmtpd does) and stops them after."""
    controllers: list[Controller] = []

    def start(*, starttls: Pair | None = None, implicit: Pair | None = None) -> str:
        port = free_port()
        kwargs: dict[str, Any] = {}
        if starttls is not None:
            kwargs["tls_context"] = starttls.server_context()
        if implicit is not None:
            kwargs["ssl_context"] = implicit.server_context()
        # server_hostname: aiosmtpd would otherwise ask the resolver for our FQDN.
        controller = Controller(
            sink, hostname=LOOPBACK, port=port, server_hostname="mx.test", **kwargs
        )
        controller.start()  # returns once the server answers
        controllers.append(controller)
        return f"{LOOPBACK}:{port}"

    yield start
    for controller in controllers:
        controller.stop()


@pytest.fixture
async def refusing() -> AsyncIterator[str]:
    """A peer that greets with 554 (RFC 5321 3.1: "no SMTP service here") and hangs up."""

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"554 mx.test no SMTP service here\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(greet, LOOPBACK, 0)
    yield f"{LOOPBACK}:{server.sockets[0].getsockname()[1]}"
    server.close()
    await server.wait_closed()


async def test_plain_smtp_is_up(start_smtp: StartSmtp, sink: Sink) -> None:
    result = await smtp.probe(start_smtp(), 5, opts())
    assert sink.mail_commands == 0
    assert (result.ok, result.error) == (True, None)
    assert result.details["banner"].startswith("mx.test Python SMTP")
    assert "8BITMIME" in result.details["extensions"]
    assert "cert_days_left" not in result.details  # no TLS, nothing measured
    assert result.latency is not None


async def test_554_banner_is_down(refusing: str) -> None:
    result = await smtp.probe(refusing, 5, opts())
    assert (result.ok, result.error) == (False, "SMTP 554 at banner: mx.test no SMTP service here")


async def test_connection_refused() -> None:
    result = await smtp.probe(f"{LOOPBACK}:{free_port()}", 5, opts())
    assert (result.ok, result.error) == (False, "connection refused")


async def test_silent_peer_times_out() -> None:
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # says nothing until the probe leaves
        writer.close()

    server = await asyncio.start_server(mute, LOOPBACK, 0)
    try:
        port = server.sockets[0].getsockname()[1]
        result = await smtp.probe(f"{LOOPBACK}:{port}", 0.3, opts())
    finally:
        server.close()
        await server.wait_closed()
    assert (result.ok, result.error) == (False, "timeout after 0.3 s")


async def test_starttls_not_offered_is_down(start_smtp: StartSmtp) -> None:
    result = await smtp.probe(start_smtp(), 5, opts(starttls=True))
    assert (result.ok, result.error) == (False, "server does not offer STARTTLS")


@pytest.mark.parametrize(
    ("pair", "raw", "ok", "degraded", "error"),
    [
        ("good", {}, True, False, None),
        ("soon", {}, True, True, "certificate expires in 5 days"),
        ("soon", {"cert_expiry_warn_days": 2}, True, False, None),
        ("expired", {}, False, False, "certificate expired 1 day ago"),
        ("self_signed", {}, False, False, "certificate verify failed: self-signed certificate"),
        ("self_signed", {"insecure_skip_verify": True}, True, False, None),
    ],
)
@pytest.mark.parametrize("mode", ["starttls", "implicit_tls"])
async def test_tls(
    start_smtp: StartSmtp,
    certs: Certs,
    mode: str,
    pair: str,
    raw: dict[str, Any],
    ok: bool,
    degraded: bool,
    error: str | None,
) -> None:
    if mode == "starttls":
        target = start_smtp(starttls=getattr(certs, pair))
    else:
        target = start_smtp(implicit=getattr(certs, pair))
    options = opts(**{mode: True, "ca_file": str(certs.ca), **raw})
    result = await smtp.probe(target, 5, options)
    assert (result.ok, result.degraded, result.error) == (ok, degraded, error)
    if ok and not raw.get("insecure_skip_verify"):
        assert result.details["cert_days_left"] is not None


async def test_starttls_ehlo_after_upgrade_lists_extensions(
    start_smtp: StartSmtp, certs: Certs
) -> None:
    target = start_smtp(starttls=certs.good)
    result = await smtp.probe(target, 5, opts(starttls=True, ca_file=str(certs.ca)))
    # After the upgrade the server no longer offers STARTTLS: proof we read the second EHLO.
    assert "STARTTLS" not in result.details["extensions"]


async def test_helo_name_cannot_smuggle_a_command(start_smtp: StartSmtp, sink: Sink) -> None:
    """A CR LF in helo_name ended EHLO and sent the rest (here MAIL FROM) as a command of its
    own: the option is refused before any connection, so the server sees nothing."""
    target = start_smtp()
    with pytest.raises(ConfigError) as err:
        await run_probe("smtp", target, 5, {"helo_name": "x\r\nMAIL FROM:<evil@x>"})
    [issue] = err.value.issues
    assert issue.path.lstrip("-").replace("-", "_") == "helo_name"
    assert issue.message.endswith(
        "expected a host name (letters, digits and hyphens, in labels joined by dots) or an"
        " address literal such as [192.0.2.1] or [IPv6:2001:db8::1] (found '\\r')"
    )
    assert sink.mail_commands == 0


@pytest.mark.parametrize("mode", ["starttls", "implicit_tls"])
async def test_missing_ca_file_is_a_startup_error(
    start_smtp: StartSmtp, sink: Sink, tmp_path: Path, mode: str
) -> None:
    """Named with its key and path before the probe connects, not a bare "No such file or
    directory" from OpenSSL."""
    missing = tmp_path / "private-ca.pem"
    with pytest.raises(StartupError) as err:
        await smtp.probe(start_smtp(), 5, opts(**{mode: True, "ca_file": str(missing)}))
    assert str(err.value) == f"ca_file: cannot read {missing}: No such file or directory"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"starttls": True, "implicit_tls": True}, "exclude each other"),
        ({"password": "x"}, "Extra inputs are not permitted"),
    ],
)
def test_bad_options_are_config_errors(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        opts(**raw)


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("mx.example.test", None),
        ("127.0.0.1:2525", None),
        ("mx:smtp", "port 'smtp' is not a number"),
        ("", "expected host or host:port, got ''"),
        (" ", "expected host or host:port, got ' '"),
        ("[]", "expected host or host:port, got '[]'"),
    ],
)
def test_check_target(target: str, problem: str | None) -> None:
    assert smtp.check_target(target) == problem
