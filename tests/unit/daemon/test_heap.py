"""`heap.trim`: freed memory pinned below a live allocation goes back to the OS."""

from __future__ import annotations

import platform

import pytest

from daemon import heap


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_trim_returns_freed_heap_pages_that_glibc_keeps() -> None:
    blocks = [bytes(2048) + b"%d" % i for i in range(100_000)]  # ~200 MB of malloc'd (not pymalloc) blocks
    pin = bytes(2048) + b"pin"  # allocated after them: glibc cannot shrink the heap's top past it
    del blocks
    before = rss_mb()
    assert heap.trim() is True
    assert rss_mb() < before - 100
    assert pin.endswith(b"pin")
