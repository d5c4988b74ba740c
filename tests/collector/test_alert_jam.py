"""One message must not stop a channel (security review): a line break in what a probe's peer
or a person wrote (an agent's evidence error, an annotated cause) went into the email's
Subject unchanged, Python refused the header with a ValueError that was no DeliveryError,
and the message stayed first in the channel's queue, untried, with every later email
behind it for ever. Titles and rows are one line now, and whatever a channel raises is a
failed try: recorded, counted, retried with backoff, holding back only its own outage."""

from __future__ import annotations

import email
import email.policy
import logging
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.controller import Controller

from availmon.alertconfig import EmailChannel
from availmon.clock import utcnow
from availmon.schema import State
from collector import channels
from collector.channels import alertmanager, slack, teams
from collector.channels.email import compose
from tests.alert_peers import hook_receiver
from tests.collector.alert_helpers import outbox
from tests.collector.board_helpers import Feed
from tests.collector.test_alert_channels import SECRET, leader, webmail_alerting
from tests.conftest import CANARY
from tests.peers import free_port

INJECTED = "HTTP 503\r\nBcc: someone@evil.example"
TO = ["oncall@council.example", "team@council.example"]
LONDON = ZoneInfo("Europe/London")


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_SECRET", SECRET)


class Inbox:
    """What a plain SMTP server on loopback was given: (recipients, parsed message, raw)."""

    def __init__(self) -> None:
        self.mail: list[tuple[list[str], Any, bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = bytes(envelope.content)
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        self.mail.append((list(envelope.rcpt_tos), parsed, raw))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[int, Inbox]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, server_hostname="mx.test")
    controller.start()  # returns once the server answers
    try:
        yield port, inbox
    finally:
        controller.stop()


def plain_email(port: int) -> dict[str, Any]:
    return {
        "type": "email",
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "from": "availmon@council.example",
        "to": TO,
    }


def one_line(text: str) -> bool:
    return not any(ch in text for ch in "\r\n\x0b\x0c\x85\u2028\u2029")


def headers(raw: bytes) -> list[bytes]:
    """The raw header lines, folded continuations joined to their header."""
    head = raw.split(b"\r\n\r\n", 1)[0].replace(b"\r\n ", b" ").replace(b"\r\n\t", b" ")
    return head.split(b"\r\n")


async def test_a_line_break_in_the_evidence_error_neither_jams_nor_splits_the_email(
    tmp_path: Path, smtp: tuple[int, Inbox]
) -> None:
    """The reviewer's case, through the collector's ingest and a real SMTP server: an
    agent's evidence error holding CR LF and a header. Both outages' emails go, in order,
    each with a one-line Subject, and nobody else is sent a copy."""
    port, inbox = smtp
    async with leader(tmp_path, plain_email(port)) as c:
        feed = Feed(c)
        start = utcnow() - timedelta(minutes=3)
        bad = await feed.event("dc", "webmail", "email", State.UP, State.DOWN, start, INJECTED)
        later = await feed.event(
            "dc",
            "council-website",
            "internet_web",
            State.UP,
            State.DOWN,
            start + timedelta(seconds=30),
            "HTTP 500",
        )
        await c.alerting.step()
        assert await c.alerting.deliver() == 2
        assert [
            (m["outage_id"], m["status"], m["attempts"], m["last_error"]) for m in outbox(c)
        ] == [
            (bad, "sent", 1, None),
            (later, "sent", 1, None),
        ]
        assert c.metrics.alert_messages.labels("team", "failed")._value.get() == 0
    (to, first, raw), (to2, second, _) = inbox.mail
    assert to == to2 == TO  # no Bcc smuggled into the envelope
    subject = first["Subject"]
    assert one_line(subject)
    assert subject.startswith("webmail at Data centre (Shared service (data centre)) down since")
    assert subject.endswith(": HTTP 503; Bcc: someone@evil.example")
    assert first["Bcc"] is None
    assert [h for h in headers(raw) if h.lower().startswith(b"bcc")] == []
    text = first.get_body(("plain",)).get_content().splitlines()
    assert "Probes saw: HTTP 503; Bcc: someone@evil.example (3 probes in a row)" in text
    assert not any(line.startswith("Bcc") for line in text)
    assert second["Subject"].startswith("council-website at Data centre")
    assert second["Subject"].endswith(": HTTP 500")


async def test_an_annotated_cause_adds_no_rows_of_its_own(
    tmp_path: Path, smtp: tuple[int, Inbox]
) -> None:
    """A cause or provider set through the annotation API may hold line breaks: the plain
    text's rows are what the email's HTML table and the Teams card are made of, so
    ``"\\nWhere: elsewhere"`` was a second "Where" row, and in the Slack section and
    Alertmanager's description a line that looked like ours."""
    port, inbox = smtp
    async with leader(tmp_path, plain_email(port)) as c:
        feed = Feed(c)
        oid = await feed.event(
            "dc", "webmail", "email", State.UP, State.DOWN, utcnow() - timedelta(minutes=3)
        )
        cause = "fibre cut\nWhere: elsewhere\r\nBoard: http://evil.example/"
        await c.write(
            lambda: c.store.annotate(oid, utcnow(), cause=cause, provider="BT\nSeverity: low")
        )
        await c.alerting.step()
        assert await c.alerting.deliver() == 1
        (queued,) = outbox(c)
        payload = queued["payload"]
    # The message as queued (what the webhook sends, and every channel starts from).
    assert payload["title"].endswith(": fibre cut; Where: elsewhere; Board: http://evil.example/")
    (_, msg, _) = inbox.mail[0]
    assert one_line(msg["Subject"])
    assert msg["Subject"].endswith(": fibre cut; Where: elsewhere; Board: http://evil.example/")
    text = msg.get_body(("plain",)).get_content().splitlines()
    html = msg.get_body(("html",)).get_content()
    labels = [line.partition(": ")[0] for line in text]
    for label in ("Where", "Board", "Provider", "Cause", "Severity"):
        assert labels.count(label) == (label != "Severity"), (label, text)
        assert html.count(f">{label}</th>") == (label != "Severity"), (label, html)
    assert "Cause: fibre cut; Where: elsewhere; Board: http://evil.example/" in text
    assert "Provider: BT; Severity: low" in text
    # The same message through the other channels' composers.
    card = teams.body(payload, LONDON)["attachments"][0]["content"]
    facts = [f["title"] for f in card["body"][1]["facts"]]
    assert len(facts) == len(set(facts)), facts
    assert one_line(card["body"][0]["text"])
    section = slack.body(payload, LONDON)["blocks"][1]["text"]["text"]
    assert [line for line in section.splitlines() if line.startswith("Where")] == [
        "Where: Data centre (dc), Shared service (data centre)"
    ]
    am = alertmanager.alert(payload, LONDON)["annotations"]
    assert one_line(am["summary"])
    assert am["provider"] == "BT; Severity: low"
    described = am["description"].splitlines()
    assert [line for line in described if line.startswith("Board")] == [f"Board: {payload['url']}"]


async def test_each_channel_makes_a_queued_title_one_line(tmp_path: Path) -> None:
    """A message queued before titles were made one line keeps its old payload in the
    outbox: each channel makes its one-line places one line again as it composes."""
    async with (
        hook_receiver(SECRET) as rx,
        leader(tmp_path, {"type": "webhook", "url": rx.url, "secret_env": "HOOK_SECRET"}) as c,
    ):
        feed = Feed(c)
        await feed.event(
            "dc", "webmail", "email", State.UP, State.DOWN, utcnow() - timedelta(minutes=1)
        )
        await c.alerting.step()
        (queued,) = outbox(c)
        old: Mapping[str, Any] = {
            **queued["payload"],
            "title": f"webmail at Data centre down: {INJECTED}",
            "reason": INJECTED,
            "provider": "Microsoft\r\nX-Priority: 1",
        }
        await c.alerting.senders["team"].send(old)
        (got,) = rx.received
        assert got["title"] == "webmail at Data centre down: HTTP 503; Bcc: someone@evil.example"
        assert got["reason"] == INJECTED  # data, as the collector has it; JSON escapes it
    cfg = EmailChannel.model_validate(plain_email(25))
    msg = compose(cfg, old, LONDON)
    assert msg["Subject"] == got["title"]
    slack_body = slack.body(old, LONDON)
    assert one_line(slack_body["text"])
    assert one_line(slack_body["blocks"][0]["text"]["text"])
    card = teams.body(old, LONDON)["attachments"][0]["content"]
    assert one_line(card["body"][0]["text"])
    am = alertmanager.alert(old, LONDON)["annotations"]
    assert one_line(am["summary"])
    assert one_line(am["provider"])


class Breaks:
    """A channel with a bug for one outage's messages: its ``send`` raises RuntimeError
    (whose text holds a secret) while ``broken``; the others go to the real channel."""

    def __init__(self, inner: channels.Sender, outage: str) -> None:
        self.inner = inner
        self.outage = outage
        self.broken = True
        self.tried: list[str] = []

    async def send(self, message: Mapping[str, Any]) -> None:
        self.tried.append(message["key"])
        if self.broken and message["outage_id"] == self.outage:
            raise RuntimeError(f"cannot render for https://hooks.example/{CANARY}")
        await self.inner.send(message)


async def test_an_unexpected_error_is_a_failed_try_that_holds_only_its_own_outage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Not a DeliveryError (the channel is down: everything waits behind the failed message,
    in order) but a bug, or a message the channel cannot compose: the try is recorded with
    the exception's type (not its text, not a traceback), counted as failed and retried with
    backoff; the channel's other outages go on, and the broken outage's own later messages
    wait behind it, so its resolution never overtakes its alert."""
    async with (
        hook_receiver(SECRET) as rx,
        leader(tmp_path, {"type": "webhook", "url": rx.url, "secret_env": "HOOK_SECRET"}) as c,
    ):
        feed = Feed(c)
        t0 = utcnow() - timedelta(minutes=2)
        bad = await feed.event("dc", "webmail", "email", State.UP, State.DOWN, t0)
        good = await feed.event(
            "dc", "council-website", "internet_web", State.UP, State.DOWN, t0 + timedelta(seconds=5)
        )
        sender = Breaks(c.alerting.senders["team"], bad)
        c.alerting.senders["team"] = sender
        failed = c.metrics.alert_messages.labels("team", "failed")
        await c.alerting.step()
        with caplog.at_level(logging.ERROR, logger="collector.alerting"):
            assert await c.alerting.deliver() == 1
        assert sender.tried == [f"{bad}/firing/team", f"{good}/firing/team"]
        first, second = outbox(c)
        assert (first["outage_id"], first["status"], first["attempts"]) == (bad, "failed", 1)
        assert (
            first["last_error"] == "unexpected error: RuntimeError (a bug; see the collector's log)"
        )
        assert first["due"] > first["created_at"]  # backing off
        assert (second["outage_id"], second["status"]) == (good, "sent")
        assert failed._value.get() == 1
        # The stack goes to the log (where the bug is), not the exception's text (a secret).
        (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
        logged = record.getMessage()
        assert f"{bad}/firing/team" in logged
        assert "unexpected error: RuntimeError" in logged
        assert "in send" in logged
        assert "raise RuntimeError" in logged

        assert await c.alerting.deliver() == 0  # backing off: not tried again at once
        assert len(sender.tried) == 2
        # Both outages end. The good one's resolution goes; the broken one's waits behind
        # its alert (still backing off), even across a fresh read of the outbox.
        await feed.event("dc", "webmail", "email", State.DOWN, State.UP, utcnow())
        await feed.event("dc", "council-website", "internet_web", State.DOWN, State.UP, utcnow())
        await c.alerting.step()
        assert await c.alerting.deliver() == 1
        assert sender.tried[2:] == [f"{good}/resolved/team"]
        # Due again and still broken: tried once more; its resolution, due too, is not tried
        # past it in the same round.
        later = utcnow() + timedelta(hours=1)
        assert await c.alerting.deliver(later) == 0
        assert sender.tried[3:] == [f"{bad}/firing/team"]
        by_key = {m["key"]: m for m in outbox(c)}
        assert by_key[f"{bad}/firing/team"]["attempts"] == 2
        assert (
            by_key[f"{bad}/resolved/team"]["status"],
            by_key[f"{bad}/resolved/team"]["attempts"],
        ) == ("pending", 0)
        assert failed._value.get() == 2
        # Fixed (a new release): the broken outage's messages go, in their order.
        sender.broken = False
        assert await c.alerting.deliver(later + timedelta(hours=1)) == 2
        assert rx.delivered_keys() == [
            f"{good}/firing/team",
            f"{good}/resolved/team",
            f"{bad}/firing/team",
            f"{bad}/resolved/team",
        ]
        assert {m["status"] for m in outbox(c)} == {"sent"}
        assert all(CANARY not in (m["last_error"] or "") for m in outbox(c))


async def test_a_bug_in_a_re_post_is_logged_and_ends_no_round(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Alertmanager forgets alerts not posted again: a refresh that raised something other
    than a DeliveryError left the round (and any channel after it) to the loop's catch-all,
    which logged the exception's text."""

    class Forgets:
        resend = 0.0

        def __init__(self) -> None:
            self.posted: list[int] = []

        async def send(self, message: Mapping[str, Any]) -> None:
            return None

        async def refresh(self, messages: list[Mapping[str, Any]]) -> None:
            if not self.posted:
                self.posted.append(len(messages))
                raise RuntimeError(f"bug quoting {CANARY}")
            self.posted.append(len(messages))

    async with webmail_alerting(tmp_path) as (_, c):
        assert await c.alerting.deliver() == 1
        forgets = Forgets()
        c.alerting.senders["team"] = forgets  # type: ignore[assignment]
        with caplog.at_level(logging.ERROR, logger="collector.alerting"):
            await c.alerting.refresh()  # raised before
        assert forgets.posted == [1]
        (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert "unexpected error: RuntimeError" in record.getMessage()
        assert CANARY not in caplog.text
        await c.alerting.refresh()  # the next round posts them again
        assert forgets.posted == [1, 1]
