"""The accounting rules in force at a moment (issue 10: ``availmon report --as-of``).

A report is reproducible only if the rules that made it are: the areas and their policy,
the accounting settings, the recurring windows, the quorum services and every check's area,
provider, dependency and lifetime. The collector and the reporting commands record them
(``Store.record_rules``) whenever they change; a report ``--as-of T`` applies the version
that was in force at T to the records made by T.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Protocol

from availmon.config import Accounting, Area, Estate, Partner, RecurringWindow, Service, Site

#: Check keys that decide where a check's time goes; probe settings do not.
_CHECK_KEYS = ("name", "type", "target", "area", "provider", "depends_on", "added", "retired")


def accounting_view(estate: Estate) -> dict[str, Any]:
    """The part of the config the figures depend on, as plain JSON."""
    return {
        "name": estate.name,
        "accounting": estate.accounting.model_dump(mode="json"),
        "areas": {k: v.model_dump(mode="json") for k, v in estate.areas.items()},
        "partners": {k: v.model_dump(mode="json") for k, v in estate.partners.items()},
        "sites": {
            sid: {
                "name": s.name,
                "partner": s.partner,
                "checks": [
                    {k: v for k, v in c.model_dump(mode="json").items() if k in _CHECK_KEYS}
                    for c in s.checks
                ],
            }
            for sid, s in estate.sites.items()
        },
        "maintenance": [w.model_dump(mode="json") for w in estate.maintenance],
        "services": {k: v.model_dump(mode="json") for k, v in estate.services.items()},
    }


def canonical(view: dict[str, Any]) -> str:
    """The view with its keys sorted: the same rules give the same text (``digest``),
    whatever order the config lists its areas, partners and sites in."""
    return json.dumps(view, sort_keys=True, separators=(",", ":"))


def stored(view: dict[str, Any]) -> str:
    """The view as recorded: in the config's order, which the report lists areas, partners
    and sites in, so a report ``--as-of`` lays them out as the live one did then
    (``estate_with`` keeps the order it reads). Versions recorded before this was so hold
    ``canonical`` text: theirs come out sorted."""
    return json.dumps(view, separators=(",", ":"))


def digest(view: dict[str, Any]) -> str:
    """Short and stable: printed on the report beside the policy."""
    return hashlib.sha256(canonical(view).encode()).hexdigest()[:12]


def estate_with(estate: Estate, text: str) -> Estate:
    """``estate`` with the recorded rules in place of its own (the rest, such as the
    database path, is today's)."""
    view = json.loads(text)
    return estate.model_copy(
        update={
            "name": view["name"],
            "accounting": Accounting.model_validate(view["accounting"]),
            "areas": {k: Area.model_validate(v) for k, v in view["areas"].items()},
            "partners": {k: Partner.model_validate(v) for k, v in view["partners"].items()},
            "sites": {k: Site.model_validate(v) for k, v in view["sites"].items()},
            "maintenance": [RecurringWindow.model_validate(w) for w in view["maintenance"]],
            "services": {k: Service.model_validate(v) for k, v in view["services"].items()},
        }
    )


class _Recorder(Protocol):
    def record_rules(self, digest: str, rules: str, at: datetime) -> bool: ...


def record(store: _Recorder, estate: Estate, at: datetime) -> bool:
    """Remember the rules in force from ``at`` (only when they, or the order the config
    lists them in, changed: ``Store.record_rules``)."""
    view = accounting_view(estate)
    return store.record_rules(digest(view), stored(view), at)
