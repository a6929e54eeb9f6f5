"""Example tests: each guide example runs offline against its own sqlite MLflow."""

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _no_leaked_experiment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """`mlflow.set_experiment` exports MLFLOW_EXPERIMENT_ID process-wide; keep it out of later
    tests (and of the daemons they start)."""
    for name in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    yield
