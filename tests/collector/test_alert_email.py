"""Alert email through aiosmtplib against aiosmtpd with STARTTLS and AUTH (issue 11)."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from availmon.clock import utcnow
from availmon.schema import State
from tests.collector.alert_helpers import alert_estate, outbox
from tests.collector.board_helpers import Feed
from tests.collector.test_alert_channels import leader
from tests.conftest import CANARY
from tests.peers import free_port, write_secret
from tests.probes.probe_peers import Certs, make_certs

PASSWORD = f"smtp-{CANARY}"


class Inbox:
    """Collects what aiosmtpd is given, with whether the session was encrypted and who
    logged in."""

    def __init__(self) -> None:
        self.mail: list[tuple[bool, str | None, Any]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        login = session.auth_data.login.decode() if session.authenticated else None
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.mail.append((session.ssl is not None, login, parsed))
        return "250 OK"


def authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        b"availmon",
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, auth_data=auth_data if ok else None)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def smtp(certs: Certs) -> Iterator[tuple[int, Inbox]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        server_hostname="mx.test",
        tls_context=certs.good.server_context(),
        require_starttls=True,
        authenticator=authenticator,
        auth_require_tls=True,
    )
    controller.start()  # returns once the server answers
    try:
        yield port, inbox
    finally:
        controller.stop()


def channel(port: int, certs: Certs, tmp_path: Path, **over: Any) -> dict[str, Any]:
    return {
        "type": "email",
        "host": "127.0.0.1",
        "port": port,
        "ca_file": str(certs.ca),
        "username": "availmon",
        "password_file": str(write_secret(tmp_path / "smtp-password", PASSWORD)),
        "from": "availmon@council.example",
        "to": ["oncall@council.example", "team@council.example"],
        **over,
    }


async def webmail_outage(feed: Feed) -> str:
    start = utcnow() - timedelta(minutes=3)
    return await feed.event(
        "dc", "webmail", "email", State.UP, State.DOWN, start, error="HTTP 503 <script>"
    )


async def test_email_goes_over_starttls_with_text_and_html(
    tmp_path: Path, certs: Certs, smtp: tuple[int, Inbox]
) -> None:
    port, inbox = smtp
    async with leader(tmp_path, channel(port, certs, tmp_path)) as c:
        feed = Feed(c)
        oid = await webmail_outage(feed)
        await c.alerting.step()
        assert await c.alerting.deliver() == 1
        (encrypted, login, msg) = inbox.mail[0]
        assert (encrypted, login) == (True, "availmon")
        assert msg["Subject"].startswith("webmail at Data centre (Shared service (data centre))")
        assert msg["To"] == "oncall@council.example, team@council.example"
        text = msg.get_body(("plain",)).get_content()
        html = msg.get_body(("html",)).get_content()
        assert "Probes saw: HTTP 503 <script> (3 probes in a row)" in text
        assert "Provider: Microsoft" in text
        assert f"http://board.example:9810/board/outages/{oid}" in text
        assert "HTTP 503 &lt;script&gt;" in html
        assert "<script>" not in html
        assert f'href="http://board.example:9810/board/outages/{oid}"' in html
        await feed.event("dc", "webmail", "email", State.DOWN, State.UP, utcnow())
        await c.alerting.step()
        assert await c.alerting.deliver() == 1
        resolved = inbox.mail[1][2]
        assert resolved["Subject"].startswith("RESOLVED: webmail at Data centre")
        assert resolved["In-Reply-To"] == msg["Message-ID"]  # threaded under its alert
        assert len(inbox.mail) == 2


async def test_no_starttls_no_mail(tmp_path: Path, certs: Certs) -> None:
    """A server that does not offer STARTTLS gets nothing (not even in clear): the message
    waits in the outbox with the reason."""
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, server_hostname="mx.test")
    controller.start()
    try:
        async with leader(tmp_path, channel(port, certs, tmp_path)) as c:
            await webmail_outage(Feed(c))
            await c.alerting.step()
            assert await c.alerting.deliver() == 0
            (m,) = outbox(c)
            assert m["status"] == "failed"
            assert "STARTTLS" in m["last_error"] or "starttls" in m["last_error"].lower()
    finally:
        controller.stop()
    assert inbox.mail == []


def test_email_config_refuses_a_bad_address(tmp_path: Path) -> None:
    with pytest.raises(Exception, match=r"alerts\.channels\.team\.to\[0\]"):
        alert_estate(
            tmp_path,
            {"routes": [{"name": "all", "channels": ["team"]}]},
            channels={
                "team": {"type": "email", "host": "h", "from": "a@b.c", "to": ["not an address"]}
            },
        )
