"""Example plumbing: a local sqlite MLflow store."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow


def use_local_mlflow(workdir: str | None = None) -> Path:
    """Point MLflow at `workdir/mlflow.db` (a fresh temp dir by default) and return the directory."""
    root = Path(workdir or tempfile.mkdtemp(prefix="gepa-example-"))
    root.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    return root
