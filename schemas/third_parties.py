"""Process environment for the third-party libraries every entry point loads: no network on import."""

from __future__ import annotations

import os
from collections.abc import MutableMapping

QUIET_DEFAULTS = {
    "MLFLOW_DISABLE_TELEMETRY": "true",  # MLflow sends no usage telemetry
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # litellm reads its bundled cost map instead of downloading one
}


def quiet_third_parties(environ: MutableMapping[str, str] = os.environ) -> None:
    """Set `QUIET_DEFAULTS` where unset, in `environ` (a child process's copy, or this process's).

    Call it before MLflow or litellm is imported (both read these at import); it lives in `schemas`,
    the bottom room, because importing any other room may import them."""
    for name, value in QUIET_DEFAULTS.items():
        environ.setdefault(name, value)
