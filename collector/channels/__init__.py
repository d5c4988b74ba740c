"""Alert channels (issue 11): one module per kind, one small protocol, one registry.

A channel takes a message (``collector.alerts.message``: what is down, where, since when,
what the probes saw, the board's link, and the outbox ``key``) and either delivers it or
raises :class:`DeliveryError` with a short reason; the outbox retries. Adding a channel is
one module, one line in ``REGISTRY`` and one config model in ``availmon/alertconfig.py``.

Alertmanager, the signed webhook, Slack and Teams are plain JSON POSTs over the collector's
one aiohttp session; apprise was considered and not used: its Slack and Teams plugins pin
the vendors' hosts (no proxy, no loopback receiver to test against), it posts with
``requests`` on threads, and it reports only success or failure, where the outbox wants the
reason. Email goes through aiosmtplib (STARTTLS).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import aiohttp

from availmon.alertconfig import AlertsConfig
from availmon.errors import AvailmonError, StartupError
from collector.channels import alertmanager, email, slack, teams, webhook


class DeliveryError(AvailmonError):
    """A channel did not take a message; the reason is short and holds no secret."""


class Sender(Protocol):
    async def send(self, message: Mapping[str, Any]) -> None:
        """Deliver, or raise DeliveryError."""


@dataclass(frozen=True)
class Deps:
    """What channels share: the HTTP session, the timezone people read times in."""

    session: aiohttp.ClientSession
    tz: ZoneInfo


Factory = Callable[[Any, Deps], Sender]

#: Channel type (the config's ``type``) -> how to build its sender.
REGISTRY: dict[str, Factory] = {
    "alertmanager": alertmanager.Alertmanager,
    "webhook": webhook.Webhook,
    "email": email.Email,
    "slack": slack.Slack,
    "teams": teams.Teams,
}


def build(config: AlertsConfig, deps: Deps) -> dict[str, Sender]:
    """Every configured channel, secrets read now: a missing one stops the start."""
    out: dict[str, Sender] = {}
    for name, ch in config.channels.items():
        try:
            out[name] = REGISTRY[ch.type](ch, deps)
        except StartupError as exc:
            raise StartupError(f"alerts.channels.{name}.{exc}") from None
    return out
