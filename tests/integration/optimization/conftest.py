"""Optimization integration tests: real GEPA, offline demo/test models, a real sqlite MLflow per test."""

import shutil
from pathlib import Path

import pytest

TICKETS = [
    ("I was charged twice for my order", "billing"),
    ("Where is my package? No tracking yet", "shipping"),
    ("The app crashes on start", "technical"),
    ("I forgot my password", "account"),
    ("Please send me the invoice", "billing"),
    ("The courier never delivered my parcel", "shipping"),
    ("I see an error on the website", "technical"),
    ("My login does not work", "account"),
    ("I want a refund", "billing"),
    ("When will my delivery arrive", "shipping"),
    ("The app shows a bug", "technical"),
    ("Change my username", "account"),
]
SEED = 'Route this support ticket to billing, shipping, technical or account.\nRule: if the ticket mentions "crash", the category is technical.\nTicket: {{ticket}}'


@pytest.fixture(scope="session")
def empty_mlflow_db(tmp_path_factory) -> Path:
    """An empty, fully migrated sqlite MLflow database (creating one takes ~15 s; copying it, milliseconds)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_store(tmp_path, empty_mlflow_db):
    """A fresh sqlite MLflow store for the test (a copy of the empty template)."""
    from examples._local import use_local_mlflow

    root = tmp_path / "mlflow"
    root.mkdir()
    shutil.copy(empty_mlflow_db, root / "mlflow.db")
    return use_local_mlflow(str(root))


@pytest.fixture
def router_prompt(mlflow_store):
    """The seed support-router prompt, registered as version 1."""
    import mlflow

    return mlflow.genai.register_prompt(name="support_router", template=SEED)


@pytest.fixture
def router_records():
    """(train, held-out) ticket records."""
    records = [{"inputs": {"ticket": t}, "expectations": {"expected_response": c}} for t, c in TICKETS]
    return records[:8], records[8:]
