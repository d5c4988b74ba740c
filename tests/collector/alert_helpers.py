"""An estate with alert routes for the engine tests, and readers of the outbox."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from availmon.config import Estate, parse_config
from collector.main import Collector

#: A Monday in winter (London time is UTC), not a bank holiday: 10:00 is business hours.
MONDAY_10 = datetime(2026, 1, 12, 10, 0, tzinfo=UTC)
MONDAY_22 = datetime(2026, 1, 12, 22, 0, tzinfo=UTC)


def hook(name: str) -> dict[str, Any]:
    return {"type": "webhook", "url": f"http://127.0.0.1:9/{name}", "secret_env": "HOOK_SECRET"}


def alert_estate(
    tmp: Path,
    alerts: dict[str, Any],
    *,
    web: dict[str, Any] | None = None,
    broker_port: int = 1,
    channels: dict[str, Any] | None = None,
) -> Estate:
    """Two councils' sites (the board tests' estate, with a WAN link and a dependent
    check at the Guildhall) and the given ``[alerts]`` section; channels default to
    webhooks named ``team``, ``oncall`` and ``managers``."""
    return parse_config(
        alert_data(tmp, alerts, web=web, broker_port=broker_port, channels=channels), "test"
    )


def alert_data(
    tmp: Path,
    alerts: dict[str, Any],
    *,
    web: dict[str, Any] | None = None,
    broker_port: int = 1,
    channels: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The raw data behind ``alert_estate`` (to write as TOML for a subprocess)."""

    def check(name: str, area: str, **kw: Any) -> dict[str, Any]:
        return {"name": name, "type": "http", "target": "http://127.0.0.1:1/", "area": area, **kw}

    section = {
        "board_url": "http://board.example:9810/",
        "channels": channels or {n: hook(n) for n in ("team", "oncall", "managers")},
        **alerts,
    }
    return {
        "name": "test council ICT",
        "broker": {"host": "127.0.0.1", "port": broker_port},
        "collector": {"database": str(tmp / "collector.db")},
        "web": {"listen": "127.0.0.1", "port": 0, **(web or {})},
        "partners": {
            "CCC": {"name": "Cambridge City Council"},
            "SHARED": {"name": "Shared service (data centre)"},
        },
        "sites": {
            "dc": {
                "name": "Data centre",
                "partner": "SHARED",
                "checks": [
                    check("webmail", "email", provider="Microsoft"),
                    check("council-website", "internet_web"),
                    check("printer", "servers", severity="ticket"),
                ],
            },
            "ccc-guildhall": {
                "name": "Guildhall, Cambridge",
                "partner": "CCC",
                "checks": [
                    check("wan-link", "network_telephony", provider="BT Openreach"),
                    check("intranet", "internet_web", depends_on="wan-link"),
                ],
            },
        },
        "alerts": section,
    }


def outbox(collector: Collector) -> list[dict[str, Any]]:
    """Every queued message, oldest first, payload decoded."""
    conn = sqlite3.connect(collector.estate.collector.database)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute("SELECT * FROM outbox ORDER BY id").fetchall()
    finally:
        conn.close()
    return [{**dict(r), "payload": json.loads(r["payload"])} for r in rows]


def said(collector: Collector) -> list[tuple[str, str, str]]:
    """(kind, channel, outage id) of every queued message, in order."""
    return [(m["kind"], m["channel"], m["outage_id"]) for m in outbox(collector)]
