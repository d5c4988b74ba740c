"""Durations in the config: seconds as a number, or text such as ``"30s"``, ``"5m"``,
``"250ms"``. One parser for the estate and the alert routes alike."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
#: The longest duration a setting may take: a year (TOML's ``inf``, or 1e300, overflowed
#: the date arithmetic of whatever used it, and stopped the collector or its alerts).
LONGEST = 366 * 86_400.0

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def duration(value: Any) -> Any:
    """Seconds for duration text; anything else but a number past ``LONGEST`` is left for
    pydantic to judge."""
    if isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise ValueError("expected seconds or a duration such as '30s', '5m', '250ms'")
        value = float(m.group(1)) * _UNITS[m.group(2)]
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value != value:  # NaN
            raise ValueError("expected seconds or a duration such as '30s', '5m', '250ms'")
        if value > LONGEST:
            raise ValueError("expected at most a year ('366d')")
    return value


Seconds = Annotated[float, BeforeValidator(duration), Field(gt=0, le=LONGEST, allow_inf_nan=False)]
