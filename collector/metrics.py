"""Every metric the collector exports, on an explicit registry. Per-check gauges are computed
at scrape time from the live view, so nothing can go stale or drift from the store."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from availmon.clock import utcnow
from availmon.schema import State

#: Why the store could not write (a fault of the environment, never of the event).
STORE_ERROR_REASONS = (
    "disk_full",
    "io_error",
    "readonly",
    "locked",
    "cant_open",
    "corrupt",
    "other",
)

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
    "store_refused",
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
    #: When the current state began (first probe of the run), and the last probe's reason.
    since: datetime | None = None
    error: str | None = None
    # The last probe's measurements from the heartbeat (issue 12); None: not measured.
    loss: float | None = None  # percent
    jitter: float | None = None  # seconds
    cert_not_after: datetime | None = None
    duration: float | None = None  # seconds


@dataclass(frozen=True)
class LiveAgent:
    site: str
    agent: str
    status: str
    spool_depth: int | None = None
    spool_dropped: int | None = None
    traps: tuple[tuple[str, int], ...] = ()
    #: Per required collector, the seqs its spool holds that collector has not confirmed.
    unconfirmed: tuple[tuple[str, int], ...] = ()
    #: Transitions held in memory because its spool cannot be written, and why the last
    #: write failed (None: it succeeded). ``spool_unwritten`` is None until a heartbeat
    #: says (an older agent's does not): the gauges are then absent, not 0 and 1.
    spool_unwritten: int | None = None
    spool_error: str | None = None


#: How many families ``_LiveCollector.check_families`` yields.
CHECK_FAMILIES = 7


def _label(value: str) -> str:
    """A label value as the text format writes it (prometheus_client's escaping)."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def check_lines(c: LiveCheck) -> list[bytes]:
    """One check's sample lines of each per-check family, in ``check_families`` order, as
    ``generate_latest`` writes them (labels sorted by name, values by floatToGoString);
    a test holds the two equal."""
    labels = f'area="{_label(c.area)}",check="{_label(c.check)}",site="{_label(c.site)}"'
    out: list[str] = []
    if c.state is State.UNKNOWN:
        out += ["", ""]
    else:
        up = "0.0" if c.state is State.DOWN else "1.0"
        degraded = "1.0" if c.state is State.DEGRADED else "0.0"
        out.append(f"availmon_check_up{{{labels}}} {up}\n")
        out.append(f"availmon_check_degraded{{{labels}}} {degraded}\n")
    out.append(
        "".join(
            f'availmon_check_state{{{labels},state="{s.value}"}}'
            f" {'1.0' if c.state is s else '0.0'}\n"
            for s in State
        )
    )
    for name, value in (
        ("availmon_check_latency_seconds", c.latency),
        ("availmon_check_loss_ratio", c.loss / 100 if c.loss is not None else None),
        ("availmon_check_jitter_seconds", c.jitter),
        ("availmon_check_probe_duration_seconds", c.duration),
    ):
        if value is None:
            out.append("")
        else:
            text = floatToGoString(value)  # type: ignore[no-untyped-call]  # untyped upstream
            out.append(f"{name}{{{labels}}} {text}\n")
    return [line.encode() for line in out]


class _CheckLines:
    """The per-check families as exposition text, each check's lines rendered once per
    ``LiveCheck`` value (``check_lines``): a check that did not change since the last
    scrape costs a join."""

    def __init__(self, live: _LiveCollector) -> None:
        self._live = live
        self._memo: dict[tuple[str, str], tuple[LiveCheck, list[bytes]]] = {}
        self._headers = self._split(self._text([]))[0]

    def render(self) -> bytes:
        parts: list[list[bytes]] = [[] for _ in range(CHECK_FAMILIES)]
        memo: dict[tuple[str, str], tuple[LiveCheck, list[bytes]]] = {}
        for c in self._live.checks():
            key = (c.site, c.check)
            hit = self._memo.get(key)
            lines = hit[1] if hit is not None and hit[0] is c else check_lines(c)
            memo[key] = (c, lines)
            for family, text in zip(parts, lines, strict=True):
                family.append(text)
        self._memo = memo
        return b"".join(h + b"".join(p) for h, p in zip(self._headers, parts, strict=True))

    def _text(self, checks: list[LiveCheck]) -> bytes:
        return generate_latest(_Families(lambda: self._live.check_families(checks)))

    @staticmethod
    def _split(text: bytes) -> tuple[list[bytes], list[bytes]]:
        """Each family's HELP and TYPE lines, and its sample lines."""
        heads: list[bytes] = []
        samples: list[bytes] = []
        for line in text.splitlines(keepends=True):
            if line.startswith(b"# HELP "):
                heads.append(line)
                samples.append(b"")
            elif line.startswith(b"# TYPE "):
                heads[-1] += line
            else:
                samples[-1] += line
        return heads, samples


class _LiveCollector(Collector):
    def __init__(
        self,
        checks: Callable[[], Iterable[LiveCheck]],
        agents: Callable[[], Iterable[LiveAgent]],
        extra: Callable[[], Iterable[Metric]],
    ) -> None:
        self._checks, self._agents, self._extra = checks, agents, extra

    def collect(self) -> Iterator[Metric]:
        yield from self.collect_checks()
        yield from self.collect_rest()

    def collect_checks(self) -> Iterator[Metric]:
        """The per-check families that change only when the live view does (a heartbeat,
        an event, an agent's status): /metrics renders them once per such change."""
        return self.check_families(self._checks())

    def checks(self) -> Iterable[LiveCheck]:
        return self._checks()

    def check_families(self, checks: Iterable[LiveCheck]) -> Iterator[Metric]:
        """The per-check families (``CHECK_FAMILIES`` of them) for ``checks``."""
        labels = ["site", "check", "area"]
        up = GaugeMetricFamily(
            "availmon_check_up",
            "1 when the check answers (up or degraded), 0 when down; absent while unknown",
            labels=labels,
        )
        degraded = GaugeMetricFamily(
            "availmon_check_degraded",
            "1 when the check answers but poorly (slow, lossy, certificate expiring), else 0;"
            " absent while unknown",
            labels=labels,
        )
        state = GaugeMetricFamily(
            "availmon_check_state", "1 for the check's current state", labels=[*labels, "state"]
        )
        latency = GaugeMetricFamily(
            "availmon_check_latency_seconds", "latency of the last probe", labels=labels
        )
        loss = GaugeMetricFamily(
            "availmon_check_loss_ratio",
            "share of echoes lost in the last ICMP burst (0-1); ICMP checks only",
            labels=labels,
        )
        jitter = GaugeMetricFamily(
            "availmon_check_jitter_seconds",
            "mean difference between consecutive round trips of the last ICMP burst",
            labels=labels,
        )
        duration = GaugeMetricFamily(
            "availmon_check_probe_duration_seconds",
            "wall time the last probe took (the whole batch for batched ICMP)",
            labels=labels,
        )
        for c in checks:
            key = [c.site, c.check, c.area]
            if c.state is not State.UNKNOWN:
                up.add_metric(key, 0.0 if c.state is State.DOWN else 1.0)
                degraded.add_metric(key, 1.0 if c.state is State.DEGRADED else 0.0)
            for s in State:
                state.add_metric([*key, s.value], 1.0 if c.state is s else 0.0)
            # A measurement not taken is absent, never 0 (a down check has no latency).
            for family, value in (
                (latency, c.latency),
                (loss, c.loss / 100 if c.loss is not None else None),
                (jitter, c.jitter),
                (duration, c.duration),
            ):
                if value is not None:
                    family.add_metric(key, value)
        yield from (up, degraded, state, latency, loss, jitter, duration)

    def collect_rest(self) -> Iterator[Metric]:
        """Everything else of the live view: certificate expiry (it moves with the clock),
        agents, and the extra families (KPI, delivery)."""
        labels = ["site", "check", "area"]
        cert = GaugeMetricFamily(
            "availmon_check_cert_expiry_seconds",
            "seconds until the peer certificate expires (negative once expired); TLS checks",
            labels=labels,
        )
        now = utcnow()
        for c in self._checks():
            if c.cert_not_after is not None:
                cert.add_metric([c.site, c.check, c.area], (c.cert_not_after - now).total_seconds())
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
        unwritten = GaugeMetricFamily(
            "availmon_agent_spool_unwritten",
            "events the agent holds in memory because its spool cannot be written"
            " (lost if it stops before it can)",
            labels=["site", "agent"],
        )
        writable = GaugeMetricFamily(
            "availmon_agent_spool_writable",
            "1 while the agent's spool can be written, 0 while its last write failed",
            labels=["site", "agent"],
        )
        unconfirmed = GaugeMetricFamily(
            "availmon_agent_unconfirmed",
            "seqs the agent's spool holds that this collector of the pair has not confirmed",
            labels=["site", "agent", "collector"],
        )
        for a in self._agents():
            online.add_metric([a.site, a.agent], 1.0 if a.status == "online" else 0.0)
            for name, count in a.unconfirmed:
                unconfirmed.add_metric([a.site, a.agent, name], float(count))
            for outcome, count in a.traps:
                traps.add_metric([a.site, a.agent, outcome], float(count))
            if a.spool_depth is not None:
                depth.add_metric([a.site, a.agent], float(a.spool_depth))
            if a.spool_dropped is not None:
                dropped.add_metric([a.site, a.agent], float(a.spool_dropped))
            if a.spool_unwritten is not None:
                unwritten.add_metric([a.site, a.agent], float(a.spool_unwritten))
                writable.add_metric([a.site, a.agent], 0.0 if a.spool_error else 1.0)
        yield from (cert, online, depth, dropped, unwritten, writable, traps, unconfirmed)
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
        self.store_errors = Counter(
            "availmon_store_errors",
            "writes the database refused for a reason of its own (disk full, I/O error,"
            " read-only, locked ...); the batch was kept and retried",
            ["reason"],
            registry=r,
        )
        for reason in STORE_ERROR_REASONS:
            self.store_errors.labels(reason)
        self.connects = Counter(
            "availmon_mqtt_connects", "sessions established with the broker", registry=r
        )
        self.confirmations = Counter(
            "availmon_confirmations",
            "confirmations sent to agents after a commit (one per agent per batch)",
            registry=r,
        )
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
            "web connections closed at once because web.max_connections were open, and board"
            " event streams refused over web.max_streams or web.max_streams_per_client",
            registry=r,
        )
        self.web_requests_refused = Counter(
            "availmon_web_requests_refused",
            "web requests refused: reason host (a Host header not in web.allowed_hosts, 421),"
            " tokens (an address with too many wrong tokens, 429)",
            ["reason"],
            registry=r,
        )
        for reason in ("host", "tokens"):
            self.web_requests_refused.labels(reason)
        self.alert_messages = Counter(
            "availmon_alert_messages",
            "alert messages tried per channel (outcome sent or failed; failed ones are retried)",
            ["channel", "outcome"],
            registry=r,
        )
        # As Prometheus's own prometheus_config_* pair: alert on a failed reload, or on a
        # config file newer than the last successful reload.
        self.config_reloads = Counter(
            "availmon_config_reload",
            "config reloads (SIGHUP) by result: ok, or failed (the running config stayed)",
            ["result"],
            registry=r,
        )
        for result in ("ok", "failed"):
            self.config_reloads.labels(result)
        self.config_last_success = Gauge(
            "availmon_config_last_reload_success_timestamp_seconds",
            "when the config in force was loaded (start, or the last successful reload)",
            registry=r,
        )
        self.config_last_success.set_to_current_time()
        self._counters = [v for v in vars(self).values() if isinstance(v, (Counter, Gauge))]
        self._live: _LiveCollector | None = None
        self._check_lines: _CheckLines | None = None
        self._checks_text: bytes | None = None
        self._checks_version: Hashable = None

    def watch(
        self,
        checks: Callable[[], Iterable[LiveCheck]],
        agents: Callable[[], Iterable[LiveAgent]],
        extra: Callable[[], Iterable[Metric]] = lambda: (),
    ) -> None:
        self._live = _LiveCollector(checks, agents, extra)
        self._check_lines = _CheckLines(self._live)
        self.registry.register(self._live)

    def render(self, checks_version: Hashable) -> bytes:
        """The registry's exposition for /metrics, with the per-check families (most of
        its size for a thousand checks) rendered again only when ``checks_version``
        changes; counters, agents, the KPI and certificate expiry are read fresh."""
        live, lines = self._live, self._check_lines
        if live is None or lines is None:
            return generate_latest(self.registry)
        if self._checks_text is None or self._checks_version != checks_version:
            self._checks_text = lines.render()
            self._checks_version = checks_version
        counters = self._counters

        def rest() -> Iterator[Metric]:
            for counter in counters:
                yield from counter.collect()
            yield from live.collect_rest()

        return generate_latest(_Families(rest)) + self._checks_text


class _Families:
    """What ``generate_latest`` renders: anything with ``collect()``."""

    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self.collect = collect


def kpi_families(
    kpi: Mapping[str, tuple[float, float]], target: float | None = None
) -> list[Metric]:
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
    families: list[Metric] = [downtime, ratio]
    if target is not None:
        # Exported so dashboards and alert rules compare against the configured target
        # (accounting.target_percent), not a copy of it.
        families.append(
            GaugeMetricFamily(
                "availmon_availability_target_ratio",
                "the availability target (accounting.target_percent / 100)",
                value=target,
            )
        )
    return families


def delivery_families(
    missing: Mapping[tuple[str, str], int], is_leader: bool, store_ok: bool
) -> list[Metric]:
    """Issue 8: seqs missing per agent (past the grace), whether this collector of a pair is
    the one sending alerts, and whether its store can write."""
    gauge = GaugeMetricFamily(
        "availmon_events_missing",
        "seqs the agent numbered that never reached this collector within collector.gap_grace",
        labels=["site", "agent"],
    )
    for (site, agent), n in sorted(missing.items()):
        gauge.add_metric([site, agent], float(n))
    leader = GaugeMetricFamily(
        "availmon_collector_leader", "1 while this collector is the one that sends alerts"
    )
    leader.add_metric([], 1.0 if is_leader else 0.0)
    writable = GaugeMetricFamily(
        "availmon_store_writable", "1 while the collector's database accepts writes"
    )
    writable.add_metric([], 1.0 if store_ok else 0.0)
    return [gauge, leader, writable]
