"""Production traces of an MLflow experiment as training data: records with their assessments
(expectations, feedback scores), or labeled DSPy examples."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import dspy
import mlflow
from mlflow.tracking import MlflowClient

from optimization.scorers import score_value


def _time_window(date_range: str | tuple[datetime, datetime] | None) -> tuple[int, int] | None:
    """`date_range` ('today', 'yesterday', 'last_<N>d', or (start, end)) as epoch milliseconds."""
    if date_range is None:
        return None
    now = datetime.now(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if isinstance(date_range, tuple):
        start, end = date_range
    elif date_range == "today":
        start, end = midnight, now
    elif date_range == "yesterday":
        start, end = midnight - timedelta(days=1), midnight
    elif date_range.startswith("last_") and date_range.endswith("d") and date_range[5:-1].isdigit():
        start, end = now - timedelta(days=int(date_range[5:-1])), now
    else:
        raise ValueError(
            f"date_range: expected 'today', 'yesterday', 'last_<N>d' or (start, end), got {date_range!r}"
        )
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def parsed_json(value: Any) -> Any:
    """A JSON string's value (MLflow stores trace requests/responses as JSON text); anything else unchanged."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def load_production_records(
    experiment_id: str,
    date_range: str | tuple[datetime, datetime] | None = None,
    max_results: int = 1000,
) -> list[dict[str, Any]]:
    """Traces of an experiment as `{"inputs", "outputs", "expectations", "scores", "feedback", "trace_id"}` records.

    Expectation assessments become `expectations`; feedback assessments become `scores`
    (name -> [0, 1]) and their rationales `feedback`.
    """
    window = _time_window(date_range)
    mlflow.flush_trace_async_logging()
    traces = MlflowClient().search_traces(locations=[experiment_id], max_results=max_results)
    records = []
    for trace in traces:
        if window and not window[0] <= trace.info.request_time < window[1]:
            continue
        inputs = parsed_json(trace.data.request)
        expectations, scores, notes = {}, {}, []
        for assessment in trace.info.assessments or []:
            if assessment.expectation is not None:
                expectations[assessment.name] = assessment.expectation.value
            elif assessment.feedback is not None:
                value, _ = score_value(assessment.feedback.value)
                scores[assessment.name] = value
                notes += [assessment.rationale] if assessment.rationale else []
        records.append(
            {
                "trace_id": trace.info.trace_id,
                "inputs": inputs if isinstance(inputs, dict) else {"input": inputs},
                "outputs": parsed_json(trace.data.response),
                "expectations": expectations,
                "scores": scores,
                "feedback": "\n".join(notes),
            }
        )
    return records


def load_production_data_from_mlflow(
    experiment_id: str,
    date_range: str | tuple[datetime, datetime] | None = None,
    input_key: str = "query",
    output_key: str = "response",
    min_score: float = 0.75,
    max_results: int = 1000,
) -> list[dspy.Example]:
    """DSPy examples from an experiment's traces, labeled by their `expected_response` expectation, or by
    their own output when its feedback scores average at least `min_score`. Unlabeled traces are skipped."""
    examples = []
    for record in load_production_records(experiment_id, date_range, max_results):
        inputs = record["inputs"]
        query = (
            inputs.get(input_key, next(iter(inputs.values()), None))
            if len(inputs) == 1 or input_key in inputs
            else None
        )
        label = record["expectations"].get("expected_response")
        scores = list(record["scores"].values())
        if label is None and scores and sum(scores) / len(scores) >= min_score:
            label = record["outputs"]
        if query is not None and label is not None:
            examples.append(dspy.Example(**{input_key: query, output_key: str(label)}).with_inputs(input_key))
    return examples
