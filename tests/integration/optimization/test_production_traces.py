"""Production traces with their assessments in: records, and labeled examples."""

import mlflow
from mlflow.entities import AssessmentSource

from optimization import load_production_data_from_mlflow, load_production_records


def test_traces_with_assessments_become_examples(mlflow_store) -> None:
    experiment_id = mlflow.set_experiment("prod").experiment_id

    @mlflow.trace
    def serve(query: str) -> str:
        return f"answer to {query}"

    ids = []
    for query in ("reset password", "track order", "hello"):
        serve(query=query)
        ids.append(mlflow.get_last_active_trace_id())
    mlflow.flush_trace_async_logging()
    mlflow.log_expectation(trace_id=ids[0], name="expected_response", value="Use the reset link.")
    mlflow.log_feedback(
        trace_id=ids[1],
        name="sme",
        value=1.0,
        rationale="Great",
        source=AssessmentSource(source_type="HUMAN", source_id="sme"),
    )

    records = {r["inputs"]["query"]: r for r in load_production_records(experiment_id, date_range="today")}
    assert records["reset password"]["expectations"] == {"expected_response": "Use the reset link."}
    assert records["track order"]["scores"] == {"sme": 1.0} and records["track order"]["feedback"] == "Great"
    examples = {e.query: e.response for e in load_production_data_from_mlflow(experiment_id)}
    assert examples == {"reset password": "Use the reset link.", "track order": "answer to track order"}
    assert load_production_records(experiment_id, date_range="yesterday") == []
