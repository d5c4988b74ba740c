"""An estate for the board tests (two councils, three sites, named) and message builders
that go through the collector's real ingest path (``Collector.handle_batch``)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from availmon.config import Estate, parse_config
from availmon.schema import CheckStatus, Event, Evidence, Heartbeat, State, topic
from collector.main import Collector

SITES = {
    "dc": ("Data centre", "SHARED"),
    "ccc-guildhall": ("Guildhall, Cambridge", "CCC"),
    "hdc-pathfinder": ("Pathfinder House, Huntingdon", "HDC"),
}


def board_estate(tmp: Path, web: dict[str, Any] | None = None, broker_port: int = 1) -> Estate:
    def check(name: str, area: str, **kw: Any) -> dict[str, Any]:
        return {
            "name": name,
            "type": "http",
            "target": "http://127.0.0.1:1/",
            "area": area,
            **kw,
        }

    return parse_config(
        {
            "name": "test council ICT",
            "broker": {"host": "127.0.0.1", "port": broker_port},
            "collector": {"database": str(tmp / "collector.db")},
            "web": {"listen": "127.0.0.1", "port": 0, **(web or {})},
            "partners": {
                "CCC": {"name": "Cambridge City Council"},
                "HDC": {"name": "Huntingdonshire District Council"},
                "SHARED": {"name": "Shared service (data centre)"},
            },
            "sites": {
                "dc": {
                    "name": "Data centre",
                    "partner": "SHARED",
                    "checks": [
                        check("webmail", "email", provider="Microsoft"),
                        check("council-website", "internet_web"),
                    ],
                },
                "ccc-guildhall": {
                    "name": "Guildhall, Cambridge",
                    "partner": "CCC",
                    "checks": [check("intranet", "internet_web")],
                },
                "hdc-pathfinder": {
                    "name": "Pathfinder House, Huntingdon",
                    "partner": "HDC",
                    "checks": [check("file-server", "servers")],
                },
            },
        },
        "test",
    )


class Feed:
    """Makes events and heartbeats with increasing sequence numbers per agent."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self.seq: dict[str, int] = {}

    def _next(self, agent: str) -> int:
        self.seq[agent] = self.seq.get(agent, 0) + 1
        return self.seq[agent]

    async def event(
        self,
        site: str,
        check: str,
        area: str,
        frm: State,
        to: State,
        at: datetime,
        error: str | None = None,
        latency: float | None = None,
        cause: str | None = None,
    ) -> str:
        seq = self._next(site)
        ev = Event(
            id=f"{site}:{seq}",
            seq=seq,
            site=site,
            agent=site,
            check=check,
            area=area,
            from_=frm,
            to=to,
            at=at,
            detected_at=at + timedelta(seconds=1),
            evidence=Evidence(error=error, latency=latency, probes=3, cause=cause),
        )
        await self.collector.handle_batch([(topic(site, site, "event"), ev.to_json())])
        return f"o:{ev.id}"

    async def heartbeat(self, site: str, at: datetime, *checks: CheckStatus) -> None:
        hb = Heartbeat(
            site=site,
            agent=site,
            at=at,
            seq=self.seq.get(site, 0),
            spool_depth=0,
            checks=list(checks),
        )
        await self.collector.handle_batch([(topic(site, site, "heartbeat"), hb.to_json())])


async def read_event(
    stream: aiohttp.StreamReader | asyncio.StreamReader, deadline: float = 30.0
) -> dict[str, str]:
    """One server-sent event (fields by name), skipping comments; EOFError when the
    stream ends, TimeoutError when no line comes within ``deadline``."""
    fields: dict[str, str] = {}
    while True:
        raw = await asyncio.wait_for(stream.readline(), deadline)
        if not raw:
            raise EOFError("the stream ended")
        line = raw.decode().rstrip("\r\n")
        if not line:
            if fields:
                return fields
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields[name] = fields.get(name, "") + value.removeprefix(" ")
