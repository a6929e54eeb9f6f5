"""Human durations in config files: `90s`, `10m`, `7d`, `1.5h`, `250ms`, or plain seconds."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")


def parse_duration(value: Any) -> timedelta:
    """`'10m'` -> 10 minutes; numbers are seconds; raises ValueError with an example of the format."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r} (use e.g. 30s, 10m, 2h, 7d)")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"duration must not be negative, got {value!r}")
        return timedelta(seconds=value)
    match = _PATTERN.match(str(value))
    if not match:
        raise ValueError(f"invalid duration {value!r} (use e.g. 30s, 10m, 2h, 7d)")
    number, unit = match.groups()
    return timedelta(seconds=float(number) * _UNITS[unit or "s"])


def format_duration(value: timedelta) -> str:
    """The shortest exact form: 600s -> '10m'."""
    seconds = value.total_seconds()
    for unit in ("w", "d", "h", "m", "s"):
        if seconds >= _UNITS[unit] and seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:g}s"


Duration = Annotated[
    timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)
]
