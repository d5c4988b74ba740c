"""The DNS probe against a hostile nameserver: a UDP server on 127.0.0.1, started by the test
and built with dnspython, that answers each real query as a bad or malicious server would.
It is asked only names under .test and .invalid, and answers a bounded number of queries."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import dns.message
import dns.rrset
import pytest

from probes import dns as dns_probe
from probes.base import peer_text
from probes.registry import REGISTRY

#: The query -> the records of the answer section.
Records = Callable[[dns.message.Message], list[dns.rrset.RRset]]


@dataclass
class Server:
    records: Records
    limit: int = 10
    target: str = ""
    queries: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class _ServerProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        server = self.server
        if len(server.queries) >= server.limit:
            return
        try:
            query = dns.message.from_wire(data)
            server.queries.append(query.question[0].to_text())
            response = dns.message.make_response(query)
            response.answer.extend(server.records(query))
            assert self.transport is not None
            self.transport.sendto(response.to_wire(), addr)
        except Exception as exc:  # the test asserts there were none
            server.errors.append(repr(exc))


@contextlib.asynccontextmanager
async def nameserver(records: Records) -> AsyncIterator[Server]:
    server = Server(records)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _ServerProtocol(server), local_addr=("127.0.0.1", 0)
    )
    try:
        server.target = "127.0.0.1:{}".format(transport.get_extra_info("sockname")[1])
        yield server
    finally:
        transport.close()
    assert server.errors == []


def opts(**raw: Any) -> dns_probe.Options:
    return cast(dns_probe.Options, REGISTRY["dns"].parse_options(raw))


def rrs(*lines: str) -> Records:
    """Fixed answer records, each "owner type data"."""

    def records(_query: dns.message.Message) -> list[dns.rrset.RRset]:
        out = []
        for line in lines:
            owner, rdtype, data = line.split(" ", 2)
            out.append(dns.rrset.from_text(owner, 60, "IN", rdtype, data))
        return out

    return records


@pytest.mark.parametrize(
    ("records", "raw", "ok", "error", "answers"),
    [
        # Only a record for another name: no answer, whatever it holds.
        (
            rrs("elsewhere.invalid. A 127.0.0.9"),
            {},
            False,
            "no A record for a.test in the answer, only records for other names",
            [],
        ),
        (
            rrs("elsewhere.invalid. A 127.0.0.9"),
            {"expect": ["127.0.0.9"]},
            False,
            "no A record for a.test in the answer, only records for other names",
            [],
        ),
        # The record for the name asked counts; the stray one does not.
        (
            rrs("a.test. A 127.0.0.1", "elsewhere.invalid. A 127.0.0.9"),
            {"expect": ["127.0.0.9"]},
            False,
            "expected 127.0.0.9, got 127.0.0.1",
            ["127.0.0.1"],
        ),
        # A CNAME chain from the name asked is followed (owner names compared without case).
        (
            rrs("A.Test. CNAME b.test.", "b.test. CNAME c.test.", "c.test. A 127.0.0.7"),
            {"expect": ["127.0.0.7"]},
            True,
            None,
            ["127.0.0.7"],
        ),
        # ... but only where it leads: an address for another name is no answer.
        (
            rrs("a.test. CNAME b.test.", "elsewhere.invalid. A 127.0.0.9"),
            {"expect": ["127.0.0.9"]},
            False,
            "no A record for a.test in the answer, only records for other names",
            [],
        ),
        # Nothing at all of the type.
        (rrs(), {}, False, "no A record for a.test", []),
    ],
)
async def test_only_records_for_the_name_asked_are_the_answer(
    records: Records, raw: dict[str, Any], ok: bool, error: str | None, answers: list[str]
) -> None:
    async with nameserver(records) as server:
        result = await dns_probe.probe(server.target, 2.0, opts(query_name="a.test", **raw))
    assert (result.ok, result.error) == (ok, error)
    assert result.details["answers"] == answers
    assert server.queries == ["a.test. IN A"]


def many_a(query: dns.message.Message) -> list[dns.rrset.RRset]:
    name = query.question[0].name
    addresses = [f"127.0.{i // 250}.{i % 250 + 1}" for i in range(1000)]
    return [dns.rrset.from_text_list(name, 60, "IN", "A", addresses)]


TXT_VALUES = [f"{i}\x1b[31m" + "T" * 200 + "\x07" for i in range(3)]


def control_txt(query: dns.message.Message) -> list[dns.rrset.RRset]:
    name = query.question[0].name
    return [dns.rrset.from_text_list(name, 60, "IN", "TXT", [f'"{v}"' for v in TXT_VALUES])]


async def test_an_unexpected_answer_of_many_records_is_quoted_short() -> None:
    async with nameserver(many_a) as server:
        result = await dns_probe.probe(
            server.target, 2.0, opts(query_name="a.test", expect=["10.9.9.9"])
        )
    answers = result.details["answers"]
    assert len(answers) == 1000  # the evidence stays whole
    # Five of them (dnspython keeps a record set in no particular order), then a count.
    assert result.error == f"expected 10.9.9.9, got {', '.join(answers[:5])} and 995 more"


async def test_unexpected_text_records_are_quoted_safe_and_short() -> None:
    async with nameserver(control_txt) as server:
        result = await dns_probe.probe(
            server.target, 2.0, opts(query_name="a.test", record_type="TXT", expect=["nope"])
        )
    assert not result.ok
    shown = [peer_text(v, 80) for v in TXT_VALUES]
    assert shown[0] == "0\\x1b[31m" + "T" * 70 + "…"  # escaped, cut to 80 characters
    assert result.error is not None
    prefix = "expected nope, got "
    assert result.error.startswith(prefix)
    assert sorted(result.error.removeprefix(prefix).split(", ")) == shown
