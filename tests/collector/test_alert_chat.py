"""Slack and Teams incoming webhooks (issue 11), posted to a loopback receiver that stands
in for the vendor: the webhook URL (the credential) comes from a secret file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from availmon.clock import utcnow
from availmon.schema import State
from tests.collector.board_helpers import Feed
from tests.collector.test_alert_channels import leader
from tests.conftest import CANARY
from tests.peers import write_secret

PATH = f"/services/T000/B000/{CANARY}"


@asynccontextmanager
async def chat_receiver() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    got: list[dict[str, Any]] = []

    async def post(request: web.Request) -> web.Response:
        got.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post(PATH, post)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}{PATH}", got
    finally:
        await runner.cleanup()


async def posted(
    tmp_path: Path, kind: str, error: str, *, resolved: bool = False
) -> tuple[str, list[dict[str, Any]]]:
    """The guildhall's WAN link down (the probes said ``error``), and up again if
    ``resolved``, through a ``kind`` channel: the outage's id and what the receiver got."""
    async with chat_receiver() as (url, got):
        secret = write_secret(tmp_path / "webhook-url", url)
        async with leader(tmp_path, {"type": kind, "url_file": str(secret)}) as c:
            feed = Feed(c)
            start = utcnow() - timedelta(minutes=2)
            oid = await feed.event(
                "ccc-guildhall",
                "wan-link",
                "network_telephony",
                State.UP,
                State.DOWN,
                start,
                error=error,
            )
            await c.alerting.step()
            assert await c.alerting.deliver() == 1
            if resolved:
                await feed.event(
                    "ccc-guildhall", "wan-link", "network_telephony", State.DOWN, State.UP, utcnow()
                )
                await c.alerting.step()
                assert await c.alerting.deliver() == 1
    return oid, got


@pytest.mark.parametrize("kind", ["slack", "teams"])
async def test_chat_webhook_says_what_where_since_and_links(tmp_path: Path, kind: str) -> None:
    oid, got = await posted(tmp_path, kind, "100% loss", resolved=True)
    link = f"http://board.example:9810/board/outages/{oid}"
    first, second = got
    if kind == "slack":
        assert first["text"].startswith(
            "wan-link at Guildhall, Cambridge (Cambridge City Council) down since"
        )
        assert first["text"].endswith(": 100% loss")
        section = first["blocks"][1]["text"]["text"]
        assert "Provider: BT Openreach" in section
        assert first["blocks"][2]["elements"][0]["url"] == link
        assert second["text"].startswith("RESOLVED: wan-link at Guildhall, Cambridge")
    else:
        card = first["attachments"][0]["content"]
        assert card["type"] == "AdaptiveCard"
        assert card["body"][0]["text"].startswith("wan-link at Guildhall, Cambridge")
        facts = {f["title"]: f["value"] for f in card["body"][1]["facts"]}
        assert facts["Provider"] == "BT Openreach"
        assert facts["Probes saw"] == "100% loss (3 probes in a row)"
        assert card["actions"][0]["url"] == link
        resolved = second["attachments"][0]["content"]["body"][0]
        assert (resolved["color"], resolved["text"][:9]) == ("Good", "RESOLVED:")


async def test_slack_text_from_the_wire_mentions_nobody_and_links_nowhere(tmp_path: Path) -> None:
    """The reason is what a probe read off the wire (a SIP reason phrase, an HTTP error):
    in the notification's text, which Slack reads as mrkdwn, <!channel> paged everyone and
    <url|text> made a link of the peer's choosing. The header is plain text already."""
    reason = "SIP 503 <!channel> see <http://evil.example/|the fix> & more"
    _, [first] = await posted(tmp_path, "slack", reason)
    assert first["text"].endswith(
        ": SIP 503 &lt;!channel&gt; see &lt;http://evil.example/|the fix&gt; &amp; more"
    )
    assert "<" not in first["blocks"][1]["text"]["text"]
    assert "SIP 503 <!channel> see" in first["blocks"][0]["text"]["text"]  # plain_text: as is


async def test_a_teams_card_makes_no_link_of_a_peers_text(tmp_path: Path) -> None:
    """A card's title and facts are Markdown: '[text](url)' in the reason a probe read off
    the wire was a link whose target the reader could not see. Checked with a CommonMark
    parser (Teams renders a subset of CommonMark): no link with hidden target is left (a
    bare address, as the board's, shows where it goes)."""
    from markdown_it import MarkdownIt

    reason = "SIP 503 [Reset your password](http://evil.example/login)"
    _, [first] = await posted(tmp_path, "teams", reason)
    card = first["attachments"][0]["content"]
    texts = [card["body"][0]["text"], *(f["value"] for f in card["body"][1]["facts"])]
    md = MarkdownIt("commonmark")
    assert MarkdownIt("commonmark").render(reason).count("<a ") == 1  # the parser sees links
    assert [t for t in texts if "<a " in md.render(t)] == []
    assert card["body"][0]["text"].endswith(
        "SIP 503 [Reset your password] (http://evil.example/login)"
    )
