"""The embedded broker (amqtt, for the demo) with real MQTT clients: the two amqtt faults
availmon/embedded.py corrects."""

from __future__ import annotations

import asyncio

import aiomqtt

from tests.peers import amqtt_broker

DEADLINE = 20.0


async def test_a_resumed_session_gets_only_its_own_retained_messages() -> None:
    # Another client (the collector) holds a filter that matches a retained heartbeat.
    async with (
        amqtt_broker() as broker,
        aiomqtt.Client(
            "127.0.0.1", broker.port, identifier="collector", clean_session=False
        ) as collector,
    ):
        await collector.subscribe("site/+/heartbeat", qos=1)
        await collector.publish("site/a/heartbeat", b"hb", qos=1, retain=True)
        # The agent's persistent session, subscribed to its own confirmations only.
        async with aiomqtt.Client(
            "127.0.0.1", broker.port, identifier="agent", clean_session=False
        ) as agent:
            await agent.subscribe("site/a/ack/#", qos=1)
        await collector.publish("site/a/ack/c", b"confirmed", qos=1, retain=True)
        # The agent comes back: its session resumes with its one subscription.
        async with aiomqtt.Client(
            "127.0.0.1", broker.port, identifier="agent", clean_session=False
        ) as agent:
            got = await asyncio.wait_for(anext(agent.messages), DEADLINE)
            assert (str(got.topic), got.payload) == ("site/a/ack/c", b"confirmed")
            # A marker on the agent's own filter, published after the resume, is the
            # next message: nothing of the collector's filter came in between.
            await collector.publish("site/a/ack/marker", b"end", qos=1)
            got = await asyncio.wait_for(anext(agent.messages), DEADLINE)
            assert str(got.topic) == "site/a/ack/marker", got.topic
