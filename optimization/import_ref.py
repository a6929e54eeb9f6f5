"""`package.module:function` references from the policy file and the library's arguments."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def load_ref(ref: str, what: str) -> Callable[..., Any]:
    """Import `package.module:function`; ValueError names the setting `what` when it cannot."""
    module_name, _, attribute = ref.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"{what}: cannot import {ref!r} ({exc})") from None
