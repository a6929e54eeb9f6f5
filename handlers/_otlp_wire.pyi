"""Types of the C reader `handlers/_otlp_wire.c` (see there and `handlers/otlp.py`)."""

from typing import Any

def scan(
    payload: bytes,
    span_type: type[Any],
    event_type: type[Any],
    keys: tuple[str, ...],
    markers: int,
    prefixes: tuple[str, ...],
    event_keys: tuple[str, ...],
) -> tuple[list[Any], int] | None: ...
def schema() -> dict[str, dict[int, tuple[str, str, int]]]: ...
