"""What each ongoing outage stands as right now, by the report's own rules (issue 10).

One read that the board shows and the alerts obey, so that neither can disagree with what the
quarter will count: an outage inside a maintenance window is maintenance, one behind a down
dependency is unreachable, a quorum member that too few sites see is the site's path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from availmon.config import Estate
from collector.accounting import Outage, to_us
from collector.attribution import Reason, live_verdicts
from collector.maintenance import Window, expand
from collector.report import window_of

if TYPE_CHECKING:
    from collector.store import Store

#: How far ahead declared and recurring windows are looked up: an ongoing outage only needs
#: the windows around ``now``, the week covers a window declared to start later today.
AHEAD = timedelta(days=7)


def windows_around(store: Store, estate: Estate, now: datetime) -> list[Window]:
    """Declared and recurring windows from ``now`` to a week ahead (the ongoing ones too)."""
    now_us = to_us(now)
    declared = [window_of(r) for r in store.windows(now, now + AHEAD)]
    return expand(
        estate.maintenance, declared, now_us, to_us(now + AHEAD), estate.accounting.timezone
    )


def open_verdicts(
    store: Store,
    estate: Estate,
    now: datetime,
    open_rows: Sequence[Mapping[str, Any]] | None = None,
    windows: Sequence[Window] | None = None,
) -> dict[str, Reason]:
    """For each open outage that should not stand on its own at ``now``, why (id -> Reason).

    ``open_rows`` (the store's ``board_outages(open_only=True)``) and ``windows``
    (:func:`windows_around`) when the caller has them already. Runs where the store may be
    read (the reader or writer thread).
    """
    rows = store.board_outages(open_only=True) if open_rows is None else open_rows
    if not rows:
        return {}
    if windows is None:
        windows = windows_around(store, estate, now)
    return live_verdicts(estate, [Outage.from_row(r) for r in rows], windows, to_us(now))
