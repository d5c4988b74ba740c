"""A Slack incoming webhook (issue 11): the title as text, the details as a section."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from availmon.alertconfig import SlackChannel
from availmon.text import one_line
from collector.alerts import text_body
from collector.channels.http import post_json

if TYPE_CHECKING:
    from collector.channels import Deps


def _escape(text: str) -> str:
    """Slack's mrkdwn control characters (its documented three)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def body(message: Mapping[str, Any], tz: Any) -> dict[str, Any]:
    details = text_body(message, tz).split("\n", 2)[-1].strip()
    title = one_line(message["title"])  # the notification's line and the header block
    return {
        # The notification's text is mrkdwn too: a reason a probe read off the wire (a SIP
        # reason phrase, say) could mention the whole channel (<!channel>) or hide a link.
        "text": _escape(title),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": _escape(details)[:2900]}},
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open on the board"},
                        "url": message["url"],
                    }
                ],
            },
        ],
    }


class Slack:
    def __init__(self, cfg: SlackChannel, deps: Deps) -> None:
        self.cfg = cfg
        self.deps = deps
        self.url = cfg.url()

    async def send(self, message: Mapping[str, Any]) -> None:
        await post_json(
            self.deps.session, self.url, body(message, self.deps.tz), timeout=self.cfg.timeout
        )
