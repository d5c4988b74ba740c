"""Every measure of ``make bench``. Adding one: a module with ``run(ctx) -> list[Figure]``
and one line here. Targets no measure reports on show as "not measured yet" in the table."""

from __future__ import annotations

from collections.abc import Callable

from bench.common import Ctx, Figure
from bench.measures import http, icmp, ingest, reads, report, rest, snmp, startup

Measure = Callable[[Ctx], list[Figure]]

MEASURES: dict[str, Measure] = {
    "startup": startup.run,
    "http": http.run,
    "icmp": icmp.run,
    "snmp": snmp.run,
    "rest": rest.run,
    "report": report.run,
    "reads": reads.run,
    "ingest": ingest.run,
}
