"""Small value parsers shared by config and runbooks (durations, percentages)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_duration(value: Any) -> timedelta:
    """Parse ``90d``, ``15m``, ``2h``, ``30s``, ``1w`` (or a number of seconds) into a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return timedelta(seconds=value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    raise ValueError(f"expected a duration such as 30s, 15m, 2h, 90d or 1w (got {value!r})")


def format_duration(td: timedelta) -> str:
    secs = td.total_seconds()
    for unit in ("w", "d", "h", "m"):
        size = _UNITS[unit]
        if secs >= size and secs % size == 0:
            return f"{int(secs // size)}{unit}"
    return f"{secs:g}s"


def human_seconds(secs: float) -> str:
    """Short human form of a duration in seconds: 0.4s, 12s, 3m05s, 1h02m."""
    if secs < 10:
        return f"{secs:.1f}s"
    if secs < 60:
        return f"{secs:.0f}s"
    m, s = divmod(int(round(secs)), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


Duration = Annotated[timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)]
