"""MQTT connection settings shared by agent and collector, and the few aiomqtt gaps we fill."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from availmon.config import BrokerConfig
from availmon.imports import without

# paho's connect_srv is never used (see availmon.imports): an agent without dns checks never
# loads dnspython. The agent imports aiomqtt from here so that this import comes first.
with without("dns.resolver"):
    import aiomqtt as aiomqtt


def client_kwargs(
    broker: BrokerConfig, *, username: str | None = None, password: str | None = None
) -> dict[str, Any]:
    """Connection settings; an agent passes its own identity, the collector uses the broker's."""
    kwargs: dict[str, Any] = {
        "hostname": broker.host,
        "port": broker.port,
        "keepalive": broker.keepalive,
        "username": username if username is not None else broker.username,
        "password": password if username is not None else broker.password(),
    }
    if broker.tls is not None:
        ctx = ssl.create_default_context(
            cafile=str(broker.tls.ca_file) if broker.tls.ca_file else None
        )
        if broker.tls.cert_file is not None:
            ctx.load_cert_chain(
                str(broker.tls.cert_file),
                str(broker.tls.key_file) if broker.tls.key_file else None,
            )
        kwargs["tls_context"] = ctx
    return kwargs


async def wait_disconnected(client: aiomqtt.Client) -> None:
    """Return (raising MqttError) when the connection drops.

    aiomqtt fails a pending publish only at its timeout and says nothing to an idle task, so
    a long-lived session watches the client's own disconnect future (private in aiomqtt 2.5).
    """
    disconnected: asyncio.Future[None] = client._disconnected
    await asyncio.shield(disconnected)
    raise aiomqtt.MqttError("disconnected by the broker")


def stop_if(stopping: bool, failure: BaseException | None = None) -> None:
    """Where a session's loop goes round, or where a session's failure is caught to retry:
    when its owner is stopping (its flag, set before it cancels), the stop comes out here.

    Two ways a cancellation goes missing on Python 3.11. A session's task group cancelled
    after one of its tasks failed on the lost broker raises that failure, not the
    cancellation, and a loop that then retried kept its agent or collector from ever
    stopping (``failure``: the one caught). And aiomqtt waits for a PUBACK with
    ``asyncio.wait_for``, which swallows a cancellation that comes as the PUBACK does: the
    publish returns and the task goes on (the demo's Ctrl-C hung on an agent's heartbeat
    loop). The owner's flag tells, not the task's count of cancellations: 3.11's task
    group also leaves one behind whenever a task fails."""
    if stopping:
        raise asyncio.CancelledError from failure
