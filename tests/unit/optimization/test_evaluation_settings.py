"""The process-wide MLflow settings of one MLflow GEPA run (the workaround for the MLflow/litellm import deadlock)."""

import os
import sys

from mlflow.ml_package_versions import FLAVOR_TO_MODULE_NAME
from mlflow.models.evaluation.utils.trace import configure_autologging_for_evaluation
from mlflow.utils.autologging_utils import AUTOLOGGING_INTEGRATIONS
from mlflow.utils.import_hooks import _post_import_hooks

from optimization.mlflow_gepa_optimizer import _evaluation_settings


def test_unconfigured_autolog_integrations_are_off_during_a_run_and_restored_after(monkeypatch) -> None:
    monkeypatch.setitem(
        AUTOLOGGING_INTEGRATIONS, "openai", {"log_traces": True}
    )  # the user configured this one
    before = dict(AUTOLOGGING_INTEGRATIONS)
    with _evaluation_settings(num_threads=3, trace_evaluations=False):
        assert os.environ["MLFLOW_GENAI_EVAL_MAX_WORKERS"] == "3"
        assert AUTOLOGGING_INTEGRATIONS["openai"] == {"log_traces": True}
        assert all(
            AUTOLOGGING_INTEGRATIONS[f] == {"disable": True} for f in FLAVOR_TO_MODULE_NAME if f not in before
        )
        assert "litellm.proxy.spend_tracking.savings" in sys.modules  # litellm's lazy import, done up front
    assert AUTOLOGGING_INTEGRATIONS == before


def test_mlflow_evaluation_then_registers_no_import_hook_for_unconfigured_integrations() -> None:
    """What removes the deadlock: MLflow's per-evaluation autolog set-up no longer holds its import-hook
    lock across imports, because it skips every disabled integration."""
    hooked = dict(_post_import_hooks)
    with (
        _evaluation_settings(num_threads=1, trace_evaluations=False),
        configure_autologging_for_evaluation(enable_tracing=True),
    ):
        assert dict(_post_import_hooks) == hooked
