"""Every metric the collector exports, on an explicit registry. Per-check gauges are computed
at scrape time from the live view, so nothing can go stale or drift from the store."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from availmon.schema import State

#: Why a message was rejected. Fixed, so the label stays low-cardinality (never error text).
REJECT_REASONS = (
    "oversized",
    "bad_topic",
    "malformed",
    "invalid",
    "site_mismatch",
    "agent_mismatch",
    "unknown_site",
    "future",
    "seq_conflict",
    "unknown_check",
    "unknown_area",
    "area_mismatch",
)


@dataclass(frozen=True)
class LiveCheck:
    site: str
    agent: str
    check: str
    area: str
    state: State
    latency: float | None


@dataclass(frozen=True)
class LiveAgent:
    site: str
    agent: str
    status: str
    spool_depth: int | None = None
    spool_dropped: int | None = None
    traps: tuple[tuple[str, int], ...] = ()


class _LiveCollector(Collector):
    def __init__(
        self,
        checks: Callable[[], Iterable[LiveCheck]],
        agents: Callable[[], Iterable[LiveAgent]],
        extra: Callable[[], Iterable[Metric]],
    ) -> None:
        self._checks, self._agents, self._extra = checks, agents, extra

    def collect(self) -> Iterator[Metric]:
        labels = ["site", "check", "area"]
        up = GaugeMetricFamily(
            "availmon_check_up",
            "1 when the check is up, 0 when down or degraded; absent while unknown",
            labels=labels,
        )
        state = GaugeMetricFamily(
            "availmon_check_state", "1 for the check's current state", labels=[*labels, "state"]
        )
        latency = GaugeMetricFamily(
            "availmon_check_latency_seconds", "latency of the last probe", labels=labels
        )
        for c in self._checks():
            key = [c.site, c.check, c.area]
            if c.state is not State.UNKNOWN:
                up.add_metric(key, 1.0 if c.state is State.UP else 0.0)
            for s in State:
                state.add_metric([*key, s.value], 1.0 if c.state is s else 0.0)
            if c.latency is not None:
                latency.add_metric(key, c.latency)
        online = GaugeMetricFamily(
            "availmon_agent_online",
            "1 while the agent's MQTT status is online",
            labels=["site", "agent"],
        )
        depth = GaugeMetricFamily(
            "availmon_agent_spool_depth",
            "events in the agent's spool awaiting delivery",
            labels=["site", "agent"],
        )
        dropped = CounterMetricFamily(
            "availmon_agent_spool_dropped",
            "superseded intermediate states the agent's spool dropped at its cap",
            labels=["site", "agent"],
        )
        traps = CounterMetricFamily(
            "availmon_agent_traps",
            "SNMP traps the agent's receiver handled, by outcome",
            labels=["site", "agent", "outcome"],
        )
        for a in self._agents():
            online.add_metric([a.site, a.agent], 1.0 if a.status == "online" else 0.0)
            for outcome, count in a.traps:
                traps.add_metric([a.site, a.agent, outcome], float(count))
            if a.spool_depth is not None:
                depth.add_metric([a.site, a.agent], float(a.spool_depth))
            if a.spool_dropped is not None:
                dropped.add_metric([a.site, a.agent], float(a.spool_dropped))
        yield from (up, state, latency, online, depth, dropped, traps)
        yield from self._extra()


class CollectorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.ingested = Counter(
            "availmon_events_ingested", "events stored (first delivery)", registry=r
        )
        self.duplicates = Counter(
            "availmon_events_duplicate", "events delivered again and ignored", registry=r
        )
        self.rejected = Counter(
            "availmon_events_rejected", "messages rejected, by reason", ["reason"], registry=r
        )
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)
        self.heartbeats = Counter("availmon_heartbeats", "heartbeats received", registry=r)
        self.store_busy = Counter(
            "availmon_store_busy",
            "writes that found the database locked by another process and were retried",
            registry=r,
        )
        self.messages = Counter("availmon_mqtt_messages", "MQTT messages received", registry=r)
        self.removed_check = Counter(
            "availmon_events_removed_check",
            "events accepted for a check (or area) no longer in the config, within its grace",
            registry=r,
        )
        self.heartbeat_checks_ignored = Counter(
            "availmon_heartbeat_checks_ignored",
            "check statuses left out of heartbeats because the config does not list them",
            registry=r,
        )
        self.web_connections_refused = Counter(
            "availmon_web_connections_refused",
            "web connections closed at once because web.max_connections were open",
            registry=r,
        )

    def watch(
        self,
        checks: Callable[[], Iterable[LiveCheck]],
        agents: Callable[[], Iterable[LiveAgent]],
        extra: Callable[[], Iterable[Metric]] = lambda: (),
    ) -> None:
        self.registry.register(_LiveCollector(checks, agents, extra))


def kpi_families(kpi: Mapping[str, tuple[float, float]]) -> list[Metric]:
    """The quarter-to-date KPI (issue 3) from ``collector.report.kpi_snapshot``: per area and
    ``area="combined"``, so Grafana shows the board's figure as the quarter goes."""
    downtime = GaugeMetricFamily(
        "availmon_area_downtime_seconds",
        "downtime in the quarter to date: the union of the area's counted outages",
        labels=["area"],
    )
    ratio = GaugeMetricFamily(
        "availmon_availability_ratio",
        "1 - downtime / time elapsed in the quarter; area=combined sums the areas' downtime",
        labels=["area"],
    )
    for area, (seconds, value) in kpi.items():
        downtime.add_metric([area], seconds)
        ratio.add_metric([area], value)
    return [downtime, ratio]
