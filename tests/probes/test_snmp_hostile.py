"""The SNMP probe against a hostile SNMPv2c agent: a UDP server on 127.0.0.1, started by the
test, that decodes each real request with pysnmp's message API and answers as a bad or
malicious agent would (other OIDs than asked, more rows than asked, the same rows for ever,
huge text). Every agent stops answering after a bounded number of requests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from pyasn1.codec.ber import decoder, encoder  # type: ignore[import-untyped]
from pydantic import ValidationError
from pysnmp.proto import api

from probes import snmp
from probes.base import Poll, ProbeResult
from probes.snmp import IF_ADMIN, IF_DESCR, IF_NAME, IF_OPER, SYS_UPTIME

P = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]
COMMUNITY_ENV = "AVM_TEST_HOSTILE_COMMUNITY"
GAUGE = "1.3.6.1.4.1.8072.9999.9999.1.0"  # netSnmpPlaypen: for experiments
TEXT = "1.3.6.1.4.1.8072.9999.9999.3.0"

#: (is GETBULK, OIDs asked) -> varbinds to answer, or None for no answer.
Answer = Callable[[bool, list[str]], list[tuple[str, Any]] | None]


@dataclass
class Agent:
    answer: Answer
    #: Requests answered at most: a probe that keeps asking meets silence, then its timeout.
    limit: int
    target: str = ""
    #: ("get" or "bulk", OIDs asked) of every request received.
    requests: list[tuple[str, list[str]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def bulks(self, column: str) -> int:
        return sum(kind == "bulk" and asked[0].startswith(column) for kind, asked in self.requests)


class _AgentProtocol(asyncio.DatagramProtocol):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        agent = self.agent
        if len(agent.requests) >= agent.limit:
            return
        try:
            message, _ = decoder.decode(data, asn1Spec=P.Message())
            pdu = P.apiMessage.get_pdu(message)
            bulk = bool(pdu.isSameTypeWith(P.GetBulkRequestPDU()))
            asked = [str(oid) for oid, _ in P.apiPDU.get_varbinds(pdu)]
            agent.requests.append(("bulk" if bulk else "get", asked))
            varbinds = agent.answer(bulk, asked)
            if varbinds is None:
                return
            response = P.apiMessage.get_response(message)
            P.apiPDU.set_varbinds(
                P.apiMessage.get_pdu(response),
                [(P.ObjectIdentifier(oid), value) for oid, value in varbinds],
            )
            assert self.transport is not None
            self.transport.sendto(encoder.encode(response), addr)
        except Exception as exc:  # the test asserts there were none
            agent.errors.append(repr(exc))


@contextlib.asynccontextmanager
async def hostile_agent(answer: Answer, limit: int = 40) -> AsyncIterator[Agent]:
    agent = Agent(answer, limit)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _AgentProtocol(agent), local_addr=("127.0.0.1", 0)
    )
    try:
        agent.target = "127.0.0.1:{}".format(transport.get_extra_info("sockname")[1])
        yield agent
    finally:
        transport.close()
    assert agent.errors == []


def value_of(oid: str) -> Any:
    """What an honest agent holds: sysUpTime, a gauge, a text, interfaces eth1.. all up."""
    if oid == SYS_UPTIME:
        return P.TimeTicks(4242)
    if oid == GAUGE:
        return P.Gauge32(7)
    if oid == TEXT:
        return P.OctetString(b"some text")
    for column in (IF_ADMIN, IF_OPER):
        if oid.startswith(column + "."):
            return P.Integer(1)
    if oid.startswith(IF_NAME + "."):
        return P.OctetString(b"eth" + oid.rsplit(".", 1)[1].encode())
    return P.NoSuchObject("")


def honest(bulk: bool, asked: list[str]) -> list[tuple[str, Any]] | None:
    assert not bulk  # these tests walk only where they say so
    return [(oid, value_of(oid)) for oid in asked]


@pytest.fixture
def community(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(COMMUNITY_ENV, "public")


def v2c(**options: Any) -> snmp.Options:
    return snmp.Options(community_env=COMMUNITY_ENV, retries=0, **options)


def device_polls(target: str) -> list[Poll]:
    """Four checks of one device, polled in one GET (the interface's ifIndex is known)."""
    known = ProbeResult(
        ok=True, details={"interface": "eth1", "if_index": 1, "if_column": "ifName"}
    )
    return [
        Poll(target, v2c()),
        Poll(target, v2c(oid=GAUGE, warn_above=10)),
        Poll(target, v2c(oid=TEXT)),
        Poll(target, v2c(interface="eth1"), known),
    ]


def _other_oids(bulk: bool, asked: list[str]) -> list[tuple[str, Any]]:
    return [("1.3.6.1.2.1.1.5.0", P.TimeTicks(100)) for _ in asked]


def _no_varbinds(bulk: bool, asked: list[str]) -> list[tuple[str, Any]]:
    return []


def _one_short(bulk: bool, asked: list[str]) -> list[tuple[str, Any]]:
    return [(oid, value_of(oid)) for oid in asked[:-1]]


def _one_more(bulk: bool, asked: list[str]) -> list[tuple[str, Any]]:
    return [(oid, value_of(oid)) for oid in asked] + [(GAUGE + ".1", P.Gauge32(1))]


def _reordered(bulk: bool, asked: list[str]) -> list[tuple[str, Any]]:
    return [(oid, value_of(oid)) for oid in reversed(asked)]


@pytest.mark.parametrize(
    "answer",
    [_other_oids, _no_varbinds, _one_short, _one_more, _reordered],
    ids=lambda f: f.__name__,
)
@pytest.mark.usefixtures("community")
async def test_an_answer_naming_other_oids_fails_every_check_of_the_poll(answer: Answer) -> None:
    async with hostile_agent(answer) as agent, snmp.session() as poller:
        results = await poller.probe_group(device_polls(agent.target), 2.0)
    assert [(r.ok, r.error) for r in results] == [
        (False, "the device answered other OIDs than asked")
    ] * 4
    assert [kind for kind, _ in agent.requests] == ["get"]  # one GET for the four checks


@pytest.mark.usefixtures("community")
async def test_an_honest_answer_serves_every_check_of_the_poll() -> None:
    # The same poll as above against an agent that answers what it is asked.
    async with hostile_agent(honest) as agent, snmp.session() as poller:
        results = await poller.probe_group(device_polls(agent.target), 2.0)
    assert [(r.ok, r.error) for r in results] == [(True, None)] * 4
    assert results[1].details["value"] == 7
    assert results[2].details["value"] == "some text"
    assert results[3].details["oper_status"] == "up(1)"
    assert [kind for kind, _ in agent.requests] == ["get"]


# --- OIDs in the config are normalised ----------------------------------------------------


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("1.3.6.1.2.1.1.03.0", "1.3.6.1.2.1.1.3.0"),
        (".1.3.6.1.2.1.1.3.0", "1.3.6.1.2.1.1.3.0"),
        ("1.3.0006.1.0", "1.3.6.1.0"),
        ("1.3.6.4294967295", "1.3.6.4294967295"),
        ("1.3.6.00000000000000000001", "1.3.6.1"),
    ],
)
def test_oids_are_normalised_when_parsed(given: str, normal: str) -> None:
    assert v2c(oid=given).oid == normal


@pytest.mark.parametrize(
    "oid",
    [
        "1.3.6.4294967296",  # a sub-identifier is at most 2**32 - 1 (RFC 2578)
        "1.3.6." + "9" * 5000,
        "1.3.\u0666",  # ARABIC-INDIC DIGIT SIX: a digit to \\d, not to an OID
        "1.3.6.1\n",
        "1." + ".".join(["1"] * 128),  # 129 sub-identifiers
    ],
)
def test_oids_that_are_no_oids_are_refused(oid: str) -> None:
    with pytest.raises(ValidationError, match="expected a numeric OID"):
        v2c(oid=oid)


@pytest.mark.usefixtures("community")
async def test_an_oid_with_a_leading_zero_reads_that_oid() -> None:
    # "--oid 1.3.6.1.2.1.1.03.0" is sysUpTime; pysnmp answers "1.3.6.1.2.1.1.3.0".
    async with hostile_agent(honest) as agent:
        result = await snmp.probe(agent.target, 2.0, v2c(oid="1.3.6.1.2.1.1.03.0"))
    assert (result.ok, result.error) == (True, None)
    assert result.details == {
        "oid": SYS_UPTIME,
        "value": 4242,
        "sys_uptime_ticks": 4242,
        "rebooted": None,
    }
    assert agent.requests == [("get", [SYS_UPTIME])]  # one OID, asked once


# --- the interface walk ---------------------------------------------------------------------


def _same_rows_for_ever(bulk: bool, asked: list[str]) -> list[tuple[str, Any]]:
    """Every GETBULK (of any column) answered with ifName.1-200, far more than the 25 asked
    and never moving on: a walk that trusts it never ends."""
    if not bulk:
        return honest(bulk, asked) or []
    return [(f"{IF_NAME}.{i}", P.OctetString(b"eth%d" % i)) for i in range(1, 201)]


@pytest.mark.parametrize(
    ("interface", "ok", "error", "name_bulks", "descr_bulks"),
    [
        # Found in the first 25 rows; the next answer goes back to row 1: the walk ends.
        ("eth3", True, None, 2, 0),
        # Row 100 was sent, but beyond what was asked: not read. ifDescr is asked for and
        # answered with ifName rows, outside the column: that walk ends at once.
        ("eth100", False, "interface 'eth100' not found in ifName or ifDescr", 2, 1),
        ("nope", False, "interface 'nope' not found in ifName or ifDescr", 2, 1),
    ],
)
@pytest.mark.usefixtures("community")
async def test_a_walk_answered_with_the_same_rows_stops(
    interface: str, ok: bool, error: str | None, name_bulks: int, descr_bulks: int
) -> None:
    async with hostile_agent(_same_rows_for_ever) as agent:
        result = await snmp.probe(agent.target, 3.0, v2c(interface=interface))
    assert (result.ok, result.error) == (ok, error)
    assert (agent.bulks(IF_NAME), agent.bulks(IF_DESCR)) == (name_bulks, descr_bulks)
    if ok:
        assert (result.details["if_index"], result.details["oper_status"]) == (3, "up(1)")


def _more_rows_than_asked(bulk: bool, asked: list[str]) -> list[tuple[str, Any]]:
    """An honest table of 100 interfaces, but 60 rows to every GETBULK (25 asked)."""
    if not bulk:
        return honest(bulk, asked) or []
    after = int(asked[0].rsplit(".", 1)[1]) if asked[0].startswith(IF_NAME + ".") else 0
    rows = [(f"{IF_NAME}.{i}", P.OctetString(b"eth%d" % i)) for i in range(after + 1, 101)]
    if len(rows) < 60:
        rows.append(("1.3.6.1.2.1.31.1.1.1.2.1", P.Counter32(0)))  # the next column
    return rows[:60]


@pytest.mark.usefixtures("community")
async def test_a_walk_reads_only_the_rows_it_asked_for() -> None:
    async with hostile_agent(_more_rows_than_asked) as agent:
        result = await snmp.probe(agent.target, 3.0, v2c(interface="eth90"))
    assert (result.ok, result.error) == (True, None)
    assert result.details["if_index"] == 90
    # 25 rows from each answer: rows 1-25, 26-50, 51-75, 76-100, then the next column.
    assert [asked for kind, asked in agent.requests if kind == "bulk"] == [
        [IF_NAME],
        [f"{IF_NAME}.25"],
        [f"{IF_NAME}.50"],
        [f"{IF_NAME}.75"],
        [f"{IF_NAME}.100"],
    ]


# --- text the agent sent, in error messages ------------------------------------------------

LONG_TEXT = b"\x1b[31m\x07" + b"V" * 60000


def _long_text_value(bulk: bool, asked: list[str]) -> list[tuple[str, Any]]:
    return [(o, P.OctetString(LONG_TEXT) if o == TEXT else value_of(o)) for o in asked]


def _long_text_uptime(bulk: bool, asked: list[str]) -> list[tuple[str, Any]]:
    return [(o, P.OctetString(LONG_TEXT)) for o in asked]


@pytest.mark.parametrize(
    ("answer", "options", "prefix"),
    [
        (_long_text_value, {"oid": TEXT, "warn_above": 5}, f"{TEXT}: not a number ("),
        (_long_text_uptime, {}, "sysUpTime unreadable ("),
    ],
)
@pytest.mark.usefixtures("community")
async def test_a_huge_text_value_is_quoted_short(
    answer: Answer, options: dict[str, Any], prefix: str
) -> None:
    async with hostile_agent(answer) as agent:
        result = await snmp.probe(agent.target, 2.0, v2c(**options))
    assert not result.ok
    assert result.error is not None
    # The quote: its control characters escaped, cut to 80 characters.
    quote = repr(LONG_TEXT.decode())[:79] + "…"
    assert result.error == f"{prefix}{quote})"
    assert quote.startswith("'\\x1b[31m\\x07VVV")
