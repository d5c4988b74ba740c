"""A Microsoft Teams incoming webhook (issue 11): an Adaptive Card, which both the
Workflows webhooks and the older connector webhooks accept."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from availmon.alertconfig import TeamsChannel
from availmon.text import one_line
from collector.alerts import text_body
from collector.channels.http import post_json

if TYPE_CHECKING:
    from collector.channels import Deps


def _unlinked(text: str) -> str:
    """A card's text is Markdown, and the reason in it can be what a peer sent (a SIP
    reason phrase): ``[Reset your password](http://...)`` was a link whose target the
    reader cannot see. A space between ``]`` and ``(`` makes it text in CommonMark, and
    shows the address; backslash escapes show as backslashes on some of Teams' clients."""
    return text.replace("](", "] (")


def body(message: Mapping[str, Any], tz: Any) -> dict[str, Any]:
    facts = []
    for line in text_body(message, tz).splitlines()[2:]:
        key, sep, value = line.partition(": ")
        if sep and key and not key.startswith("Alert "):
            facts.append({"title": key, "value": _unlinked(value)})
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {
                "type": "TextBlock",
                "text": _unlinked(one_line(message["title"])),
                "weight": "Bolder",
                "wrap": True,
                "color": "Good" if message["kind"] == "resolved" else "Attention",
            },
            {"type": "FactSet", "facts": facts},
        ],
        "actions": [
            {"type": "Action.OpenUrl", "title": "Open on the board", "url": message["url"]}
        ],
    }
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "content": card}
        ],
    }


class Teams:
    def __init__(self, cfg: TeamsChannel, deps: Deps) -> None:
        self.cfg = cfg
        self.deps = deps
        self.url = cfg.url()

    async def send(self, message: Mapping[str, Any]) -> None:
        await post_json(
            self.deps.session, self.url, body(message, self.deps.tz), timeout=self.cfg.timeout
        )
