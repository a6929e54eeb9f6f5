"""Freed heap memory given back to the OS, so a worker's RSS follows its live state.

glibc keeps what Python frees in its heaps, one per allocating thread (Faust's consumer thread
parses every fetch response in its own), so a long-running worker's RSS stays at the highest
peak it ever had: a burst that filled the join buffers, a large fetch. `malloc_trim(0)`
returns the free pages, inside the heaps too (glibc >= 2.8), in a few milliseconds. Where the C
library has no `malloc_trim` (musl, macOS) `trim` does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

TRIM_INTERVAL_S = 10.0


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        function = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    function.argtypes, function.restype = [ctypes.c_size_t], ctypes.c_int
    return function


_MALLOC_TRIM = _malloc_trim()


def trim() -> bool:
    """Give free heap pages back to the OS; whether any were."""
    return _MALLOC_TRIM is not None and _MALLOC_TRIM(0) == 1
