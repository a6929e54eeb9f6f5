"""The MLflow bridge's I/O helpers that need no MLflow: --since, retry classification, the summary line."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

from daemon.mlflow_bridge import MlflowUnavailable, describe_counts, parse_since, with_retry
from handlers.trace_mapping import Counts

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_since_is_an_iso_time_or_a_duration_ago() -> None:
    assert (
        parse_since("2026-11-26T10:00:00", NOW)
        == parse_since("2026-11-26T10:00:00+00:00", NOW)
        == parse_since("2h", NOW)
    )
    with pytest.raises(ValueError, match="--since"):
        parse_since("yesterday-ish", NOW)


def test_transient_errors_are_retried_with_backoff() -> None:
    calls, sleeps = [], []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise ConnectionError("refused")
        return "ok"

    assert with_retry(flaky, "search", retry_for_s=60, sleep=sleeps.append) == "ok"
    assert sleeps == [0.5, 1.0, 2.0]


def test_a_refused_request_is_not_retried() -> None:
    def refused() -> None:
        raise MlflowException("no such experiment", error_code=RESOURCE_DOES_NOT_EXIST)

    with pytest.raises(MlflowUnavailable, match="search: no such experiment"):
        with_retry(refused, "search", retry_for_s=60, sleep=lambda s: pytest.fail("retried"))


def test_summary_line() -> None:
    counts = Counts(
        3,
        Counter(no_prompt=1),
        Counter({"gepa.trace.v1": 3, "gepa.rating.v1": 2}),
        Counter(unknown_rating=1),
        deferred=2,
    )
    assert describe_counts(counts) == (
        "4 new trace(s): 3 mapped, 1 unmapped (no_prompt 1); published: gepa.rating.v1 2, gepa.trace.v1 3; "
        "human assessments unmapped: unknown_rating 1; 2 deferred (MLflow still writing them; retried next pass)"
    )
    assert describe_counts(Counts()) == "0 new trace(s): 0 mapped, 0 unmapped; published: nothing"
