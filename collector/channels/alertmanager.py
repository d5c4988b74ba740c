"""Prometheus Alertmanager (issue 11): alerts POSTed to ``/api/v2/alerts``.

An outage is one Alertmanager alert, identified by its labels (``alertname``, ``outage_id``,
site, check, ...), so a message sent twice is the same alert to Alertmanager. A firing alert
carries ``startsAt`` (the outage's start) and no end: Alertmanager resolves such an alert by
itself after its ``resolve_timeout``, so the collector posts the firing alerts again every
``resend`` seconds (:meth:`Alertmanager.refresh`); the resolution carries ``endsAt``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from availmon.alertconfig import AlertmanagerChannel
from availmon.text import one_line
from collector.alerts import text_body
from collector.channels.http import post_json

if TYPE_CHECKING:
    from collector.channels import Deps

#: How often firing alerts are posted again (Alertmanager's resolve_timeout is 5 min).
RESEND = 60.0


def alert(message: Mapping[str, Any], tz: Any) -> dict[str, Any]:
    """One Alertmanager alert from a message (its labels stable for one outage)."""
    down = message["state"] == "down"
    labels = {
        "alertname": "AvailmonOutage" if down else "AvailmonDegraded",
        "outage_id": message["outage_id"],
        "site": message["site"],
        "check": message.get("check") or "site",
        "area": message["area"],
        "state": message["state"],
        "severity": message["severity"],
    }
    if message.get("partner"):
        labels["partner"] = message["partner"]
    if message["kind"] == "test":
        labels["alertname"] = "AvailmonTest"
    # The summary and the provider are one-line annotations (what receivers put in a
    # subject or a chat line); the description keeps its lines, each one line of ours.
    annotations = {
        "summary": one_line(message["title"]),
        "description": text_body(message, tz),
        "board": message["url"],
    }
    if message.get("provider"):
        annotations["provider"] = one_line(message["provider"])
    out: dict[str, Any] = {
        "labels": labels,
        "annotations": annotations,
        "startsAt": message["start"],
        "generatorURL": message["url"],
    }
    if message.get("end") and message["kind"] in ("resolved", "test"):
        out["endsAt"] = message["end"]
    return out


class Alertmanager:
    resend = RESEND

    def __init__(self, cfg: AlertmanagerChannel, deps: Deps) -> None:
        self.cfg = cfg
        self.deps = deps
        token = cfg.bearer_token()
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = cfg.url.rstrip("/") + "/api/v2/alerts"

    async def send(self, message: Mapping[str, Any]) -> None:
        await self.refresh([message])

    async def refresh(self, messages: Sequence[Mapping[str, Any]]) -> None:
        """Post these alerts (again): Alertmanager merges them by labels."""
        body = [alert(m, self.deps.tz) for m in messages]
        await post_json(
            self.deps.session, self.url, body, timeout=self.cfg.timeout, headers=self.headers
        )
