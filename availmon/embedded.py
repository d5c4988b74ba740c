"""The in-process amqtt broker: lets a newcomer's first run need nothing installed.

Production uses Mosquitto (persistence, TLS, ACLs; see ``availmon broker``). amqtt keeps
sessions in memory, so a restart of the process that hosts it forgets queued messages.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from amqtt.broker import Broker

log = logging.getLogger(__name__)


@asynccontextmanager
async def embedded_broker(host: str, port: int) -> AsyncIterator[Broker]:
    broker = Broker(
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
