"""The base of every error gepa-stream raises on purpose.

It lives in `schemas`, the lowest layer, so every room (`schemas`, `optimization`, `handlers`,
`daemon`) can derive from it. Each subclass keeps the builtin base its callers catch
(`ValueError`, `LookupError`, `RuntimeError`); the CLI maps the family to exit codes and
one-line messages in one place (`daemon/cli.py`).
"""

from __future__ import annotations


class GepaStreamError(Exception):
    """An expected failure whose message is the one line a user reads (no traceback needed)."""
