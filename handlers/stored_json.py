"""JSON bytes for what the tables keep: exactly as long as their content.

orjson (3.13 measured) returns each `dumps` result in a buffer of at least 4 KB, so a stored
60-byte key or 400-byte fact record held 4 KB for as long as the table kept it (about 8 KB per
fact: 90 % of an ingest worker's state). Stored keys and values are copied to their exact size.
"""

from __future__ import annotations

from typing import Any

import orjson


def stored_json(value: Any) -> bytes:
    """`orjson.dumps(value)`, copied into a bytes object of its exact length."""
    return bytes(memoryview(orjson.dumps(value)))
