"""``availmon agent``: probe one site's checks, spool transitions, publish them."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.memory import trim_every, trim_heap
from agent.publisher import Publisher
from agent.scheduler import ResultHook, Scheduler
from agent.spool import Spool
from agent.state import Transition
from agent.traps import TrapEvent, TrapReceiver, match_check
from availmon.aio import cancel_all
from availmon.clock import utcnow
from availmon.config import Check, Estate, TrapConfig, load_config
from availmon.configpath import describe as describe_config
from availmon.configpath import find_config
from availmon.errors import StartupError, UsageError
from availmon.imports import no_ca_file
from availmon.reload import read_new
from availmon.schema import Evidence, Heartbeat, State, heartbeat_json
from availmon.signals import install_reload_handler, install_stop_handlers
from probes import icmp

log = logging.getLogger(__name__)


class Agent:
    """One site's agent. ``run`` until ``stop`` is set; owns every task it starts."""

    def __init__(
        self,
        estate: Estate,
        site: str,
        *,
        on_result: ResultHook | None = None,
    ) -> None:
        if site not in estate.sites:
            known = ", ".join(sorted(estate.sites)) or "none"
            raise UsageError(f"--site {site!r} is not in the config (sites: {known})")
        self.estate = estate
        self.site = site
        self.agent_id = estate.agent_id(site)
        cfg = estate.agent
        self.spool = Spool(
            cfg.state_dir / f"{self.agent_id}.spool.db",
            site=site,
            agent=self.agent_id,
            max_events=cfg.spool_max_events,
            mergeable=self._mergeable(estate),
            confirmers=estate.confirmers(),
        )
        self.scheduler = Scheduler(
            estate.sites[site].checks, self._on_transition, on_result=on_result, site=site
        )
        self.trap_receiver: TrapReceiver | None = None
        self.traps_ready = asyncio.Event()
        self.publisher = Publisher(
            estate.broker,
            site=site,
            agent=self.agent_id,
            spool=self.spool,
            heartbeat=self._heartbeat,
            heartbeat_interval=cfg.heartbeat_interval,
            reconnect_max=cfg.reconnect_max,
            password=cfg.password(),
            batch_events=cfg.batch_events,
            max_bytes=estate.collector.max_payload_bytes,
            ack_timeout=cfg.ack_timeout,
            # The heartbeat's JSON is the agent's largest garbage: give its pages back at once.
            after_heartbeat=trim_heap,
        )

    def _mergeable(self, estate: Estate) -> list[str]:
        return [
            c.name
            for c in estate.sites[self.site].checks
            if estate.areas[c.area].degraded_counts_as_down
        ]

    def restart_only(self) -> list[str]:
        """The settings a running agent cannot change: its MQTT session and spool stay."""
        site = f"sites.{self.site}"
        return [
            "broker",
            "agent",
            "collector.client_id",
            "collector.members",
            "collector.max_payload_bytes",
            f"{site}.agent",
            f"{site}.traps",
        ]

    def reload(self, path: Path) -> bool:
        """Re-read ``path`` (SIGHUP): apply its checks, or keep the running config and log
        why. The MQTT session, the spool and unchanged checks' state are untouched."""
        log.info("config reload: reading %s", path)
        new = read_new(path, self.estate, self.restart_only(), log)
        if new is not None and self.site not in new.sites:
            log.error("config reload refused: %s: sites: no site %r any more", path, self.site)
            new = None
        if new is None:
            return False
        self.estate = new
        self.spool.set_mergeable(self._mergeable(new))
        added, changed, removed = self.scheduler.reload(new.sites[self.site].checks)
        log.info(
            "config reload ok: %s: %d checks; added %s, changed %s, removed %s",
            path,
            len(new.sites[self.site].checks),
            ", ".join(added) or "none",
            ", ".join(changed) or "none",
            ", ".join(removed) or "none",
        )
        return True

    async def _on_transition(
        self, check: Check, transition: Transition, detected: datetime
    ) -> None:
        event = await self.spool.append(
            check.name,
            check.area,
            transition.from_,
            transition.to,
            transition.at,
            detected,
            transition.evidence,
        )
        if event is None:
            # The spool cannot be written (it said why, once): held in memory, in order,
            # and written by ``Spool.keep_writing`` when it can be. Nothing stops.
            log.debug(
                "holding %s %s -> %s at %s in memory: the spool cannot take it yet",
                check.name,
                transition.from_.value,
                transition.to.value,
                transition.at.isoformat(),
            )
            return
        log.debug("spooled %s", event.id)
        self.publisher.wake()

    async def _heartbeat(self) -> bytes:
        stats = await self.spool.stats()
        envelope = Heartbeat(
            site=self.site,
            agent=self.agent_id,
            at=utcnow(),
            seq=stats.last_seq,
            first_seq=stats.first_seq,
            # Transitions held in memory (the spool could not take them) are held too: the
            # collector reads a depth of 0 as "every event delivered".
            spool_depth=stats.depth + stats.unwritten,
            spool_dropped=stats.dropped,
            # Said apart as well: held in memory they are lost if the agent stops now.
            spool_unwritten=stats.unwritten,
            spool_error=stats.error,
            unconfirmed=stats.unconfirmed,
            traps=dataclasses.asdict(self.trap_receiver.stats) if self.trap_receiver else {},
            checks=[],
        )
        return heartbeat_json(envelope, self.scheduler.statuses())

    async def _traps(self, config: TrapConfig) -> None:
        """Receive linkDown/linkUp and apply them to the matching snmp check at once."""
        queue: asyncio.Queue[TrapEvent] = asyncio.Queue()
        async with TrapReceiver(config, queue.put_nowait) as receiver:
            self.trap_receiver = receiver
            self.traps_ready.set()
            log.info("SNMP trap receiver on %s:%d", config.listen, receiver.port)
            while True:
                trap = await queue.get()
                snmp_checks = [  # the config in force now (a reload may have changed it)
                    (c.name, c.target, c.options)
                    for c in self.estate.sites[self.site].checks
                    if c.type == "snmp"
                ]
                await self.apply_trap(trap, snmp_checks)

    async def apply_trap(self, trap: TrapEvent, checks: list[tuple[str, str, Any]]) -> None:
        name = match_check(trap, checks)
        interface = trap.if_name or trap.if_descr or f"ifIndex {trap.if_index}"
        if name is None:
            log.info("%s from %s about %s matches no snmp check", trap.kind, trap.source, interface)
            return
        if trap.kind == "linkDown" and trap.admin_status == 2:
            log.info(
                "%s from %s: %s shut down on purpose (ifAdminStatus down): not an outage",
                trap.kind,
                trap.source,
                interface,
            )
            return
        to = State.DOWN if trap.kind == "linkDown" else State.UP
        evidence = Evidence(error=f"{trap.kind} trap from {trap.source} ({interface})"[:500])
        await self.scheduler.force(name, to, trap.received_at, evidence)

    async def _reloads(self, reload: asyncio.Event, path: Path) -> None:
        while True:
            await reload.wait()
            reload.clear()
            self.reload(path)

    async def run(
        self, stop: asyncio.Event, *, reload: asyncio.Event | None = None, path: Path | None = None
    ) -> None:
        """Run until ``stop``; each time ``reload`` is set, re-read ``path``."""
        site = self.estate.sites[self.site]
        checks = site.checks
        if any(c.type == "icmp" for c in checks):
            mode = icmp.icmp_mode()
            if mode is icmp.Mode.NONE:
                raise StartupError(icmp.describe_mode(mode))
            log.info("%s", icmp.describe_mode(mode))
        log.info("agent %s for site %s: %d checks", self.agent_id, self.site, len(checks))
        self.publisher.stopping = False
        try:
            async with asyncio.TaskGroup() as tg:
                work = [
                    tg.create_task(self.scheduler.run(), name="scheduler"),
                    tg.create_task(self.publisher.run(), name="publisher"),
                    tg.create_task(trim_every(self.estate.agent.heartbeat_interval), name="trim"),
                    # Writes what a spool that could not be written held in memory.
                    tg.create_task(self.spool.keep_writing(self.publisher.wake), name="spool"),
                ]
                if site.traps is not None:
                    work.append(tg.create_task(self._traps(site.traps), name="traps"))
                if reload is not None and path is not None:
                    work.append(tg.create_task(self._reloads(reload, path), name="reload"))
                await stop.wait()
                self.publisher.stopping = True
                await cancel_all(work)
            await self.publisher.publish_stopped()
        except BaseExceptionGroup as group:
            startup = group.subgroup(StartupError)
            if startup is not None:
                raise startup.exceptions[0] from None
            raise
        finally:
            self.spool.close()


def add_parser(sub: Any) -> None:
    p = sub.add_parser("agent", help="run a site's agent")
    p.add_argument(
        "--config",
        help="estate config (TOML; default: $AVAILMON_CONFIG, else /etc/availmon/availmon.toml)",
    )
    p.add_argument("--site", required=True, help="which site of the config this agent is")
    p.set_defaults(func=cmd_agent)


def import_http_client() -> None:
    """Import aiohttp without its default contexts' CA file (issue 9: 1,000 checks in at
    most 60 MB; about 2 MB): every HTTP probe passes a context of its own
    (``probes.http_io``), so aiohttp's defaults are never used in an agent. Only the agent
    process does this: the collector's alert channels rely on aiohttp's verified default,
    and ``availmon demo`` runs both in one process (it never calls this)."""
    if "aiohttp" in sys.modules:
        return
    with no_ca_file():
        import aiohttp  # noqa: F401  # its import is the point


async def cmd_agent(args: argparse.Namespace) -> int:
    path, source = find_config(args.config)
    if source != "--config":  # from the environment or /etc: say which file it is
        log.info("%s", describe_config(path, source))
    estate = load_config(path)
    agent = Agent(estate, args.site)
    if any(c.type == "http" for c in estate.sites[args.site].checks):
        import_http_client()  # a check added by a reload gets aiohttp as it comes
    stop, reload = asyncio.Event(), asyncio.Event()
    remove = install_stop_handlers(stop)
    remove_reload = install_reload_handler(reload)
    try:
        await agent.run(stop, reload=reload, path=path)
    finally:
        remove_reload()
        remove()
    return 0
