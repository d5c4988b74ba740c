"""What each ongoing outage stands as right now, by the report's own rules (issue 10).

One read that the board shows and the alerts obey, so that neither can disagree with what the
quarter will count: an outage inside a maintenance window is maintenance, one behind a down
dependency is unreachable, a quorum member that too few sites see is the site's path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from availmon.config import Estate
from collector.accounting import Outage, to_us
from collector.attribution import Reason, live_verdicts
from collector.live import WINDOWS_AHEAD
from collector.maintenance import Window, expand
from collector.report import window_of

if TYPE_CHECKING:
    from collector.store import Store

#: How far ahead windows are looked up: the live view's own horizon, so the board (from the
#: view) and the alert engine (from the store) see the same windows.
AHEAD = WINDOWS_AHEAD


def expand_around(
    estate: Estate, declared: Iterable[Mapping[str, Any]], now: datetime
) -> list[Window]:
    """The declared windows (store rows) and the config's recurring ones, from ``now`` to a
    week ahead (the ongoing ones too)."""
    now_us = to_us(now)
    return expand(
        estate.maintenance,
        [window_of(r) for r in declared],
        now_us,
        to_us(now + AHEAD),
        estate.accounting.timezone,
    )


def windows_around(store: Store, estate: Estate, now: datetime) -> list[Window]:
    """:func:`expand_around` of the windows declared in the store."""
    return expand_around(estate, store.windows(now, now + AHEAD), now)


def verdicts_of(
    estate: Estate,
    open_rows: Iterable[Mapping[str, Any]],
    windows: Sequence[Window],
    now: datetime,
) -> dict[str, Reason]:
    """For each open outage (store rows) that should not stand on its own at ``now``, why
    (id -> Reason): pure, for callers that hold the rows and windows in memory."""
    return live_verdicts(estate, [Outage.from_row(r) for r in open_rows], windows, to_us(now))


def open_verdicts(store: Store, estate: Estate, now: datetime) -> dict[str, Reason]:
    """:func:`verdicts_of` the store's open outages and windows. Runs where the store may be
    read (the reader or writer thread)."""
    rows = store.board_outages(open_only=True)
    if not rows:
        return {}
    return verdicts_of(estate, rows, windows_around(store, estate, now), now)
