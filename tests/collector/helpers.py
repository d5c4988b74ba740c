"""Small builders shared by the accounting tests: an estate, outages in local time, a CSV."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from availmon.clock import to_iso
from availmon.config import Estate, parse_config
from collector.accounting import Outage, from_us, to_us

LONDON = ZoneInfo("Europe/London")

SITES = {
    "dc": "SHARED",
    "ccc-guildhall": "CCC",
    "hdc-pathfinder": "HDC",
    "scdc-cambourne": "SCDC",
}
PARTNERS = {
    "CCC": "Cambridge City Council",
    "HDC": "Huntingdonshire District Council",
    "SCDC": "South Cambridgeshire District Council",
    "SHARED": "Shared service (data centre)",
}


def estate_data(**accounting: Any) -> dict[str, Any]:
    return {
        "name": "test estate",
        "accounting": accounting,
        "partners": {k: {"name": v} for k, v in PARTNERS.items()},
        "sites": {k: {"partner": v} for k, v in SITES.items()},
    }


def make_estate(areas: dict[str, Any] | None = None, **accounting: Any) -> Estate:
    data = estate_data(**accounting)
    if areas:
        data["areas"] = areas
    return parse_config(data, "test")


def write_config(path: Path, db: Path, extra: str = "") -> Path:
    """The same estate as TOML, for the command-line tests."""
    lines = ['name = "test estate"', "", "[collector]", f'database = "{db}"', ""]
    for pid, name in PARTNERS.items():
        lines += [f"[partners.{pid}]", f'name = "{name}"', ""]
    for site, partner in SITES.items():
        lines += [f"[sites.{site}]", f'partner = "{partner}"', ""]
    path.write_text("\n".join(lines) + extra, encoding="utf-8")
    return path


def local(text: str) -> datetime:
    """``2019-07-01T10:00`` in Europe/London (or as given, when it has an offset)."""
    dt = datetime.fromisoformat(text)
    return dt if dt.tzinfo else dt.replace(tzinfo=LONDON)


def outage(
    area: str,
    start: str,
    end: str | None,
    *,
    site: str = "dc",
    state: str = "down",
    planned: bool = False,
    **kw: Any,
) -> Outage:
    return Outage(
        id=kw.pop("id", f"t:{uuid.uuid4().hex}"),
        site=site,
        check=kw.pop("check", "c"),
        area=area,
        state=state,
        start=to_us(local(start)),
        end=to_us(local(end)) if end else None,
        planned=planned,
        **kw,
    )


def store_row(o: Outage) -> dict[str, Any]:
    """An Outage as an import row for ``Store.import_outages``."""
    return {
        "id": o.id,
        "site": o.site,
        "check_name": o.check,
        "area": o.area,
        "state": o.state,
        "start": to_iso(from_us(o.start)),
        "end": to_iso(from_us(o.end)) if o.end is not None else None,
        "planned": int(o.planned),
        "cause": o.cause,
        "provider": o.provider,
        "note": o.note,
    }
