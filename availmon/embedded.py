"""The in-process amqtt broker: lets a newcomer's first run need nothing installed.

Production uses Mosquitto (persistence, TLS, ACLs; see ``availmon broker``). amqtt keeps
sessions in memory, so a restart of the process that hosts it forgets queued messages.

amqtt 0.12 (the newest release) has two faults the demo met, corrected here rather than
worked around in every client:
- it iterates its table of subscriptions while awaiting sends, so a client subscribing
  meanwhile raised "dictionary changed size during iteration" and reset a connecting client
  (agents started together lost 15 s to a connect timeout);
- when a client resumes a persistent session it sends that client the retained messages of
  *every* client's subscriptions, so an agent got the collector's heartbeats and statuses on
  its confirmation topic.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, ItemsView, Iterator
from contextlib import asynccontextmanager
from typing import Any

from amqtt.broker import Broker
from amqtt.session import Session

log = logging.getLogger(__name__)

Subscribers = list[tuple[Session, int]]


class _Subscriptions(dict[str, Subscribers]):
    """A subscription table whose iteration walks a snapshot of its keys, so a subscribe or
    a disconnect while the broker awaits inside a loop over it cannot break that loop."""

    def __iter__(self) -> Iterator[str]:
        return iter(list(dict.keys(self)))

    def items(self) -> ItemsView[str, Subscribers]:  # type: ignore[override]
        return dict(self).items()


class EmbeddedBroker(Broker):  # type: ignore[misc]
    """amqtt's broker with the two corrections above."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self._subscriptions = _Subscriptions()

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        # Only for a filter this session holds: amqtt calls this for every filter in the
        # table when a session resumes.
        subscribers = self._subscriptions.get(subscription[0], [])
        if any(s.client_id == session.client_id for s, _ in subscribers):
            await super()._publish_retained_messages_for_subscription(subscription, session)


@asynccontextmanager
async def embedded_broker(host: str, port: int) -> AsyncIterator[Broker]:
    broker = EmbeddedBroker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }
    )
    await broker.start()
    log.info("embedded MQTT broker (amqtt) listening on %s:%d", host, port)
    try:
        yield broker
    finally:
        await broker.shutdown()
