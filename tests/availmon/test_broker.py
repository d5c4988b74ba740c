"""`availmon broker` (issue 5, part 4) against a real Mosquitto loaded with the files it writes.

Refusals are proved without waiting for something not to happen: Mosquitto acknowledges a
QoS 1 publish only after it has routed (or refused) it, and queues each subscriber's
messages in order, so when a marker published afterwards reaches the collector without the
refused message before it, the refused message was never delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import ssl
import subprocess
import tomllib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from availmon.broker import Layout, Listeners, render_conf
from availmon.cli import main
from availmon.config import parse_config
from availmon.errors import EXIT_USAGE
from availmon.mqtt import wait_disconnected
from tests.peers import free_port, mosquitto_from

#: Only guards a hung test; nothing is timed.
HANG = 60

ROOT = Path(__file__).resolve().parents[2]
ESTATE = """\
[broker]
host = "127.0.0.1"
username = "collector"

[partners.P]
name = "Partner"

[sites.a]
name = "Site A"
partner = "P"

[sites.b]
partner = "P"

[sites.c]
partner = "P"
agent = "c-agent"
"""

#: Logins the estate above should produce.
AGENTS = {"a": "a", "b": "b", "c": "c-agent"}  # site -> agent id
COLLECTOR = "collector"
OWN = "availmon/v1/a/a/event"  # agent a's own event topic


@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path
    key: Path


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A CA and a server certificate for 127.0.0.1, made with the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl CLI (Debian package openssl; make test installs it)")
    d = tmp_path_factory.mktemp("certs")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    (d / "leaf.cnf").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "30",
            "-subj", "/CN=availmon broker test CA")  # fmt: skip
    openssl("req", *key, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=broker")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "30", "-extfile", "leaf.cnf",
            "-out", "server.pem")  # fmt: skip
    return Certs(d / "ca.pem", d / "server.pem", d / "server.key")


@dataclass(frozen=True)
class Broker:
    """The rendered files and the loopback ports the rendered config listens on."""

    tmp: Path
    certs: Certs
    plain_port: int
    tls_port: int

    @property
    def out(self) -> Path:
        return self.tmp / "broker"

    def password(self, username: str) -> str:
        return (self.out / "secrets" / f"{username}.password").read_text().strip()

    def render(self) -> int:
        """Run the command as an operator would; returns its exit status."""
        return main(
            [
                "broker",
                "--config", str(self.tmp / "estate.toml"),
                "--out", str(self.out),
                "--tls-cert", str(self.certs.cert),
                "--tls-key", str(self.certs.key),
                "--tls-ca", str(self.certs.ca),
                "--port", str(self.tls_port),
                "--bind", "127.0.0.1",
                "--plain-port", str(self.plain_port),
                "--persistence-location", str(self.tmp / "db"),
            ]
        )  # fmt: skip


def new_broker(tmp: Path, certs: Certs, estate: str = ESTATE) -> Broker:
    (tmp / "estate.toml").write_text(estate)
    (tmp / "db").mkdir()
    plain_port = free_port()
    while (tls_port := free_port()) == plain_port:
        pass
    return Broker(tmp, certs, plain_port=plain_port, tls_port=tls_port)


@pytest.fixture
def broker(tmp_path: Path, certs: Certs) -> Broker:
    b = new_broker(tmp_path, certs)
    assert b.render() == 0
    return b


@contextlib.asynccontextmanager
async def running(broker: Broker) -> AsyncIterator[None]:
    """Mosquitto loaded with the rendered files, unchanged but for one line under root.

    Started as root, Mosquitto drops to the ``mosquitto`` user before reading passwd, acl and
    the TLS key, which then cannot reach pytest's private temporary directory; on a broker
    host the operator makes them readable to group mosquitto instead (the summary says so).
    """
    conf = (broker.out / "mosquitto.conf").read_text()
    if os.geteuid() == 0:
        conf += "user root\n"
    test_conf = broker.tmp / "mosquitto-test.conf"
    test_conf.write_text(conf)
    async with mosquitto_from(test_conf, broker.plain_port):
        yield


class Client(aiomqtt.Client):
    """aiomqtt that keeps each PUBACK's reason code (MQTT 5 carries the broker's verdict)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.puback_codes: list[int] = []

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        self.puback_codes.append(rc.value)
        super()._on_publish(client, userdata, mid, rc, props)


def connect(
    broker: Broker,
    username: str | None,
    password: str | None,
    *,
    tls: bool = False,
    protocol: aiomqtt.ProtocolVersion = aiomqtt.ProtocolVersion.V311,
) -> Client:
    return Client(
        "127.0.0.1",
        broker.tls_port if tls else broker.plain_port,
        username=username,
        password=password,
        identifier=f"test-{username}-{uuid.uuid4().hex[:8]}",
        protocol=protocol,
        tls_context=ssl.create_default_context(cafile=str(broker.certs.ca)) if tls else None,
        timeout=HANG,
    )


def login(broker: Broker, username: str, **kwargs: Any) -> Client:
    return connect(broker, username, broker.password(username), **kwargs)


@contextlib.asynccontextmanager
async def collector(broker: Broker, *, tls: bool = False) -> AsyncIterator[Client]:
    """The collector's identity, subscribed (SUBACK received) to everything it may read."""
    async with login(broker, COLLECTOR, tls=tls) as client:
        await client.subscribe("availmon/v1/#", qos=1)
        yield client


async def publish(
    broker: Broker,
    username: str,
    topic: str,
    payload: bytes,
    *,
    refused: bool = False,
    tls: bool = False,
) -> None:
    """One QoS 1 publish on its own connection; returns once the broker has acknowledged it.

    Mosquitto 2.0 closes the connection just after refusing a publish (its PUBACK goes first;
    eclipse-mosquitto/mosquitto#2579), so a refused publish may end in MqttError on the way
    out, and every publish here gets a fresh connection.
    """
    acked = False
    try:
        async with login(broker, username, tls=tls) as client:
            await client.publish(topic, payload, qos=1)
            acked = True
    except aiomqtt.MqttError:
        if not (refused and acked):
            raise
    assert acked


async def received_until(client: Client, marker: bytes) -> list[tuple[str, bytes]]:
    """Every message the subscriber gets, up to and including the marker."""
    got: list[tuple[str, bytes]] = []
    async with asyncio.timeout(HANG):
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            got.append((str(message.topic), message.payload))
            if message.payload == marker:
                return got
    raise AssertionError("subscription ended")


def test_files_are_written_locked_down(broker: Broker) -> None:
    out = broker.out
    assert (out / "secrets").stat().st_mode & 0o777 == 0o700
    users = [*AGENTS.values(), COLLECTOR]
    for user in users:
        assert (out / "secrets" / f"{user}.password").stat().st_mode & 0o777 == 0o600
        assert len(broker.password(user)) >= 40
    passwd = (out / "passwd").read_text().splitlines()
    assert [line.split(":", 1)[0] for line in passwd] == users
    assert all(line.split(":", 1)[1].startswith("$7$") for line in passwd)
    assert not any(broker.password(u) in "\n".join(passwd) for u in users)
    assert (out / "passwd").stat().st_mode & 0o777 == 0o640
    acl = [line for line in (out / "acl").read_text().splitlines() if line and line[0] != "#"]
    expected = []
    for site, agent in AGENTS.items():
        prefix = f"availmon/v1/{site}/{agent}/"
        expected += [
            f"user {agent}",
            *(f"topic write {prefix}{kind}" for kind in ("events", "event", "heartbeat", "status")),
            f"topic read {prefix}ack/+",
            "topic read availmon/v1/_collectors/+/status",
        ]
    expected += [
        "user collector",
        "topic read availmon/v1/#",
        "topic write availmon/v1/+/+/ack/availmon-collector",
        "topic write availmon/v1/_collectors/availmon-collector/status",
        "topic write availmon/v1/_collectors/availmon-collector/alerts",
    ]
    assert acl == expected
    conf = (out / "mosquitto.conf").read_text().splitlines()
    for setting in (
        "per_listener_settings false",
        "allow_anonymous false",
        "use_username_as_clientid true",
        f"password_file {out}/passwd",
        f"acl_file {out}/acl",
        "persistence true",
        f"persistence_location {broker.tmp}/db/",
        "max_queued_messages 0",
        "max_queued_bytes 0",
        f"listener {broker.tls_port} 127.0.0.1",
        f"certfile {broker.certs.cert}",
        "tls_version tlsv1.2",
        f"listener {broker.plain_port} 127.0.0.1",
        "max_packet_size 66560",  # collector.max_payload_bytes (64 KiB) + 1 KiB of framing
    ):
        assert setting in conf


def test_persistence_is_saved_as_often_as_the_readme_says(tmp_path: Path) -> None:
    """A broker crash loses what was queued since its last save, which agents have already
    deleted from their spools: the rendered autosave interval is short (it was 60 s), and it
    is the figure the README gives operators."""
    estate = parse_config(tomllib.loads(ESTATE), "estate.toml")
    conf = render_conf(estate, "estate.toml", Layout(tmp_path), Listeners()).splitlines()
    [interval] = [int(line.split()[1]) for line in conf if line.startswith("autosave_interval ")]
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    said = re.search(r"Mosquitto saves its persistence every (\d+) s", readme)
    assert said is not None, "the README no longer says how often the broker saves"
    assert interval == int(said.group(1)) == 10


def test_defaults_render_a_public_tls_listener_only(tmp_path: Path) -> None:
    """Without --bind or --plain-port: TLS on every interface at 8883, nothing in clear."""
    estate = parse_config(tomllib.loads(ESTATE), "estate.toml")
    layout = Layout(tmp_path, install_dir=Path("/etc/mosquitto/availmon"))
    conf = render_conf(estate, "estate.toml", layout, Listeners()).splitlines()
    assert [line for line in conf if line.startswith("listener")] == ["listener 8883"]
    for setting in (
        "password_file /etc/mosquitto/availmon/passwd",
        "acl_file /etc/mosquitto/availmon/acl",
        "persistence_location /var/lib/mosquitto/",
        "certfile /etc/mosquitto/certs/server.crt",
        "keyfile /etc/mosquitto/certs/server.key",
    ):
        assert setting in conf
    assert not any(line.startswith("cafile") for line in conf)


async def test_agent_publishes_under_its_own_prefix(broker: Broker) -> None:
    async with running(broker), collector(broker) as sub:
        await publish(broker, "a", OWN, b"event from a")
        await publish(broker, "c-agent", "availmon/v1/c/c-agent/heartbeat", b"hb from c")
        got = await received_until(sub, b"hb from c")
    assert got == [(OWN, b"event from a"), ("availmon/v1/c/c-agent/heartbeat", b"hb from c")]


@pytest.mark.parametrize(
    "topic",
    [
        "availmon/v1/b/b/event",  # another site's topic
        "availmon/v1/b/a/event",  # another site, its own agent id
        "availmon/v1/a/b/event",  # its own site, another agent id
        "availmon/v1/a/aa/event",  # a longer agent id that starts with its own
        "availmon/v1/a",  # above its prefix
        "elsewhere/entirely",
    ],
)
async def test_agent_cannot_publish_outside_its_prefix(broker: Broker, topic: str) -> None:
    async with running(broker), collector(broker) as sub:
        await publish(broker, "a", topic, b"forged", refused=True)
        await publish(broker, "a", OWN, b"marker")
        got = await received_until(sub, b"marker")
    assert got == [(OWN, b"marker")]


async def test_mqtt5_refusal_is_not_authorized(broker: Broker) -> None:
    async with running(broker), collector(broker):
        v5 = aiomqtt.ProtocolVersion.V5
        async with login(broker, "a", protocol=v5) as ok:
            await ok.publish(OWN, b"allowed", qos=1)
        with contextlib.suppress(aiomqtt.MqttError):  # closed after the refusal, see publish()
            async with login(broker, "a", protocol=v5) as forger:
                await forger.publish("availmon/v1/b/b/event", b"forged", qos=1)
    assert ok.puback_codes == [0x00]
    assert forger.puback_codes == [0x87]  # Not authorized


def persistent_collector(broker: Broker) -> Client:
    """The collector's login with a persistent session (one login, one connection: the
    broker ties the client id to the username)."""
    return Client(
        "127.0.0.1",
        broker.plain_port,
        username=COLLECTOR,
        password=broker.password(COLLECTOR),
        identifier=COLLECTOR,
        clean_session=False,
        timeout=HANG,
    )


async def test_collector_cannot_publish(broker: Broker) -> None:
    async with running(broker):
        async with persistent_collector(broker) as away:
            await away.subscribe("availmon/v1/#", qos=1)
        # While its session waits, the collector's login forges an event; its PUBACK means
        # Mosquitto has already refused or queued it, so the agent's marker queues behind it.
        # (Its own session, not a clean one: a clean login would simply discard it.)
        with contextlib.suppress(aiomqtt.MqttError):  # Mosquitto drops it after refusing
            async with persistent_collector(broker) as forger:
                await forger.publish(OWN, b"forged by the collector", qos=1)
        await publish(broker, "a", OWN, b"marker")
        async with persistent_collector(broker) as back:
            got = await received_until(back, b"marker")
    assert got == [(OWN, b"marker")]


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("a", "wrong"),
        ("a", "<b>"),  # b's password
        ("nobody", "<a>"),  # a's password under a name it does not have
        ("a", None),
        (None, None),  # anonymous
    ],
)
async def test_bad_logins_are_refused(
    broker: Broker, username: str | None, password: str | None
) -> None:
    if password is not None and password.startswith("<"):
        password = broker.password(password.strip("<>"))
    async with running(broker):
        for tls in (False, True):
            with pytest.raises(aiomqtt.MqttCodeError) as refused:
                async with connect(broker, username, password, tls=tls):
                    pass
            assert str(refused.value.rc) == "Not authorized"


async def test_rerun_keeps_passwords(
    tmp_path: Path, certs: Certs, capsys: pytest.CaptureFixture[str]
) -> None:
    broker = new_broker(tmp_path, certs)
    (broker.out / "secrets").mkdir(parents=True)
    (broker.out / "secrets" / "b.password").write_text("the operator's own password\n")
    assert await asyncio.to_thread(broker.render) == 0
    assert "3 new, 1 kept" in capsys.readouterr().out
    users = [*AGENTS.values(), COLLECTOR]
    first = {u: broker.password(u) for u in users}
    hashes = (broker.out / "passwd").read_text()
    assert first["b"] == "the operator's own password"

    assert await asyncio.to_thread(broker.render) == 0
    assert "0 new, 4 kept" in capsys.readouterr().out
    assert {u: broker.password(u) for u in users} == first
    assert (broker.out / "passwd").read_text() != hashes  # freshly salted, same passwords
    async with running(broker), collector(broker) as sub:
        for site, agent in AGENTS.items():
            await publish(broker, agent, f"availmon/v1/{site}/{agent}/event", agent.encode())
        got = await received_until(sub, b"c-agent")
    assert [payload for _, payload in got] == [b"a", b"b", b"c-agent"]


def test_rerun_keeps_the_group_of_passwd_and_acl(broker: Broker) -> None:
    """Once the operator has handed them to group mosquitto, re-rendering must not undo it."""
    others = [g for g in os.getgroups() if g != os.getegid()]
    group = 1 if os.geteuid() == 0 else (others[0] if others else None)
    if group is None:
        pytest.skip("needs a second group to hand the files to")
    for name in ("passwd", "acl"):
        os.chown(broker.out / name, -1, group)
    assert broker.render() == 0
    assert [(broker.out / n).stat().st_gid for n in ("passwd", "acl")] == [group, group]


async def test_tls_listener(broker: Broker) -> None:
    async with running(broker), collector(broker, tls=True) as sub:
        await publish(broker, "a", OWN, b"over tls", tls=True)
        await publish(broker, "a", "availmon/v1/b/b/event", b"forged", refused=True, tls=True)
        await publish(broker, "a", OWN, b"marker", tls=True)
        got = await received_until(sub, b"marker")
    assert got == [(OWN, b"over tls"), (OWN, b"marker")]


@pytest.mark.parametrize(
    ("old", "new", "error"),
    [
        (
            'username = "collector"',
            'username = "bad name"',
            "estate.toml: broker.username: collector username 'bad name' cannot be a"
            " Mosquitto username and topic level",
        ),
        (
            'username = "collector"',
            'username = "a:b"',
            "estate.toml: broker.username: collector username 'a:b' cannot be a",
        ),
        (
            'username = "collector"',
            'username = "c-agent"',
            "estate.toml: broker.username: collector username 'c-agent' is also the agent id"
            " of sites.c.agent",
        ),
        (
            'username = "collector"',
            '[collector]\nclient_id = "b"',  # no broker.username: the client id is the login
            "estate.toml: collector.client_id: collector username 'b' is also the agent id"
            " of sites.b",
        ),
        (
            'agent = "c-agent"',
            'agent = "c agent"',  # caught by the config model, named the same way
            "estate.toml: sites.c.agent: String should match pattern",
        ),
    ],
)
def test_bad_logins_in_config_name_the_key(
    tmp_path: Path,
    certs: Certs,
    capsys: pytest.CaptureFixture[str],
    old: str,
    new: str,
    error: str,
) -> None:
    broker = new_broker(tmp_path, certs, ESTATE.replace(old, new))
    assert broker.render() == EXIT_USAGE
    assert error in capsys.readouterr().err
    assert not broker.out.exists()  # nothing half-written


@pytest.mark.parametrize("attack", [False, True], ids=["control", "attack"])
async def test_an_agent_login_cannot_take_over_the_collectors_session(
    broker: Broker, attack: bool
) -> None:
    """With the client id tied to the login, an agent connecting as the collector's client
    id with a clean session gets its own id instead, and the collector's backlog survives."""
    async with running(broker):
        # The collector subscribes with a persistent session, then goes away.
        async with persistent_collector(broker) as away:
            await away.subscribe("availmon/v1/#", qos=1)
        await publish(broker, "a", OWN, b"queued while the collector is away")
        # Agent a's login, claiming the collector's client id with a clean session.
        if attack:
            async with Client(
                "127.0.0.1",
                broker.plain_port,
                username="a",
                password=broker.password("a"),
                identifier=COLLECTOR,
                clean_session=True,
                timeout=HANG,
            ):
                pass
        await publish(broker, "a", OWN, b"marker")
        async with persistent_collector(broker) as back:
            got = await received_until(back, b"marker")
    assert got == [(OWN, b"queued while the collector is away"), (OWN, b"marker")]


ACK_A = "availmon/v1/a/a/ack/availmon-collector"  # the collector's confirmations to agent a


@contextlib.asynccontextmanager
async def agent_listening(broker: Broker, username: str, topic: str) -> AsyncIterator[Client]:
    async with login(broker, username) as client:
        await client.subscribe(topic, qos=1)
        yield client


async def test_only_the_collector_confirms_and_only_that_agent_reads_it(broker: Broker) -> None:
    """Issue 8: confirmations go on a per-agent topic that only the collector may write and
    only that agent may read. Agent b subscribing to a's confirmations gets nothing (a
    marker on its own topic arrives first); agent a forging its own confirmation is refused."""
    async with running(broker):
        async with collector(broker) as witness:
            await publish(broker, "a", ACK_A, b"forged by a", refused=True)
            await publish(broker, "a", OWN, b"a's marker")
            forged = await received_until(witness, b"a's marker")
        async with (
            agent_listening(broker, "a", "availmon/v1/a/a/ack/+") as a,
            agent_listening(broker, "b", "availmon/v1/a/a/ack/+") as b_spy,
        ):
            await b_spy.subscribe("availmon/v1/b/b/ack/+", qos=1)
            await publish(broker, COLLECTOR, ACK_A, b"stored 1-3")
            # Another collector's name in the topic: not this login's to write.
            await publish(broker, COLLECTOR, "availmon/v1/a/a/ack/other", b"x", refused=True)
            await publish(broker, COLLECTOR, "availmon/v1/b/b/ack/availmon-collector", b"for b")
            await publish(broker, COLLECTOR, ACK_A, b"marker")
            got_a = await received_until(a, b"marker")
            got_b = await received_until(b_spy, b"for b")
    assert forged == [(OWN, b"a's marker")]
    assert got_a == [(ACK_A, b"stored 1-3"), (ACK_A, b"marker")]
    assert got_b == [("availmon/v1/b/b/ack/availmon-collector", b"for b")]


async def test_oversized_packets_never_reach_the_collector(broker: Broker) -> None:
    """Without a limit one agent login pushed ~256 MiB messages through to the collector,
    which buffered each before rejecting it. Now the broker disconnects the sender of a packet
    over the limit; a payload just over the collector's own limit still reaches it (and is
    rejected and counted there)."""
    limit = 65_536
    async with running(broker), collector(broker) as sub:
        disconnected = False
        with contextlib.suppress(aiomqtt.MqttError):  # also on the way out, disconnected
            async with login(broker, "a") as client:
                # No PUBACK ever comes: await the broker dropping the connection instead.
                publishing = asyncio.ensure_future(client.publish(OWN, b"x" * (limit + 2048)))
                try:
                    await wait_disconnected(client)
                except aiomqtt.MqttError:
                    disconnected = True
                finally:
                    publishing.cancel()
        assert disconnected
        await publish(broker, "a", OWN, b"y" * (limit + 1))
        await publish(broker, "a", OWN, b"marker")
        got = await received_until(sub, b"marker")
    assert [len(payload) for _, payload in got] == [limit + 1, len(b"marker")]
