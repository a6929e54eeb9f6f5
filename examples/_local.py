"""Example plumbing: a local sqlite MLflow store and quiet, network-free settings."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import mlflow


def use_local_mlflow(workdir: str | None = None) -> Path:
    """Point MLflow at `workdir/mlflow.db` (a fresh temp dir by default) and return the directory."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    root = Path(workdir or tempfile.mkdtemp(prefix="gepa-example-"))
    root.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    return root
