"""`gepa-stream bridge mlflow`: MLflow traces and SME assessments of an experiment -> Kafka.

Reads the experiment's traces in timestamp order, page by page (metadata first; spans only
for traces that need publishing), maps them with `handlers.trace_mapping`, publishes, and saves
its position under the state directory (after acknowledged pages, at most every
`SAVE_EVERY_S`, and at the end of every pass). Every MLflow call
is retried with backoff for `retry_for_s`, then fails with `MlflowUnavailable`.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import requests
import sqlalchemy.exc
import tenacity
from mlflow.entities import Assessment, Trace
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from daemon import prometheus_metrics
from daemon.kafka_client import send_events
from daemon.settings import Settings
from handlers.trace_mapping import (
    AssessmentRecord,
    BridgePosition,
    Counts,
    MappingOptions,
    TraceRecord,
    Unmappable,
    finished,
    listed,
    prompt_refs,
    trace_events,
)
from optimization.production_traces import parsed_json
from schemas.durations import parse_duration
from schemas.errors import GepaStreamError
from schemas.events import CloudEvent, RatingEvent, TraceEvent

log = logging.getLogger("gepa_stream.bridge")
T = TypeVar("T")
_PERMANENT = {
    "INVALID_PARAMETER_VALUE",
    "RESOURCE_DOES_NOT_EXIST",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
    "BAD_REQUEST",
}
_IN_CHUNK = 100  # trace ids per `request_id IN (...)` lookup
SAVE_EVERY_S = 2.0
"""Mid-pass saves of the position, at most this often (the state holds the whole look-back window; a
crash repeats at most these seconds of publishing, which creates no new facts downstream)."""


class MlflowUnavailable(GepaStreamError, RuntimeError):
    """MLflow did not answer within the retry budget (or refused the request outright)."""


@dataclass(frozen=True)
class BridgeConfig:
    """One bridge: the experiment (id or name), the mapping, where to start, how far back to rescan."""

    experiment: str
    options: MappingOptions
    since_ms: int | None = None
    lookback: timedelta = timedelta(days=1)
    page_size: int = 100
    retry_for_s: float = 60.0


def parse_since(text: str, now: datetime | None = None) -> int:
    """`--since`: an ISO-8601 time (UTC if naive) or a duration ago (`2h`, `7d`), as epoch ms."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            moment = (now or datetime.now(UTC)) - parse_duration(text)
        except ValueError:
            raise ValueError(
                f"--since: expected an ISO time (2026-01-31T08:00) or a duration ago (2h, 7d), got {text!r}"
            ) from None
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() * 1000)


def _transient(error: BaseException) -> bool:
    if isinstance(error, MlflowException):
        return error.error_code not in _PERMANENT
    return isinstance(error, (OSError, requests.RequestException, sqlalchemy.exc.OperationalError))


def with_retry(
    call: Callable[[], T], what: str, retry_for_s: float, sleep: Callable[[float], None] = time.sleep
) -> T:
    """`call()`, retried with exponential backoff (0.5 s doubling to 10 s, the last wait cut to the
    budget) on transient errors for `retry_for_s`; then MlflowUnavailable naming `what` and the last error."""
    backoff = tenacity.wait_exponential(multiplier=0.5, max=10.0)

    def wait(state: tenacity.RetryCallState) -> float:
        return min(backoff(state), max(0.0, retry_for_s - (state.seconds_since_start or 0.0)))

    def before_sleep(state: tenacity.RetryCallState) -> None:
        prometheus_metrics.BRIDGE_RETRIES.inc()
        log.warning("%s failed (%s); retrying in %.1fs", what, _error(state), state.upcoming_sleep)

    def give_up(state: tenacity.RetryCallState) -> T:
        error = _error(state)
        raise MlflowUnavailable(
            f"{what}: MLflow unreachable for {retry_for_s:g}s ({type(error).__name__}: {error})"
        ) from error

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(_transient),
        wait=wait,
        stop=tenacity.stop_after_delay(retry_for_s),
        sleep=sleep,
        before_sleep=before_sleep,
        retry_error_callback=give_up,
    )
    try:
        return retrying(call)
    except MlflowUnavailable:
        raise
    except Exception as error:  # not transient: refused outright, never retried
        raise MlflowUnavailable(f"{what}: {error}") from error


def _error(state: tenacity.RetryCallState) -> BaseException | None:
    return state.outcome.exception() if state.outcome is not None else None


def assessment_record(assessment: Assessment) -> AssessmentRecord | None:
    """An MLflow assessment as the plain dict `handlers.trace_mapping` maps; None for one without an
    id (never logged: the store gives every logged assessment one, which the bridge dedupes on)."""
    if assessment.assessment_id is None:
        return None
    feedback, expectation = assessment.feedback, assessment.expectation
    error = feedback.error if feedback is not None else None
    return AssessmentRecord(
        assessment_id=assessment.assessment_id,
        name=assessment.name,
        kind="expectation" if expectation is not None else "feedback",
        value=expectation.value
        if expectation is not None
        else feedback.value
        if feedback is not None
        else None,
        rationale=assessment.rationale,
        source_type=str(assessment.source.source_type) if assessment.source else "",
        source_id=assessment.source.source_id if assessment.source else None,
        updated_ms=assessment.last_update_time_ms or assessment.create_time_ms or 0,
        valid=assessment.valid is not False,
        error=(error.error_message or error.error_code or "error") if error is not None else None,
    )


def trace_record(trace: Trace) -> TraceRecord:
    """An MLflow trace as the plain dict `handlers.trace_mapping` maps (inputs/outputs only if spans were read)."""
    info = trace.info
    record = TraceRecord(
        trace_id=info.trace_id,
        timestamp_ms=info.request_time,
        state=info.state.value,
        tags=dict(info.tags or {}),
        metadata=dict(info.trace_metadata or {}),
        assessments=[r for r in map(assessment_record, info.assessments or []) if r is not None],
    )
    if trace.data.spans:
        record["inputs"] = parsed_json(trace.data.request)
        record["outputs"] = parsed_json(trace.data.response)
    return record


class TraceReader:
    """Paged, retried reads of one experiment's traces."""

    def __init__(self, client: MlflowClient, experiment: str, page_size: int, retry_for_s: float) -> None:
        self.client = client
        self.page_size = page_size
        self.retry_for_s = retry_for_s
        self.experiment_id = self._resolve(experiment)

    def _resolve(self, experiment: str) -> str:
        """An experiment id, or a name looked up (MlflowUnavailable if neither exists)."""
        found = with_retry(
            lambda: (
                self.client.get_experiment_by_name(experiment)
                if not experiment.isdigit()
                else self.client.get_experiment(experiment)
            ),
            f"experiment {experiment!r}",
            self.retry_for_s,
        )
        if found is None:
            raise MlflowUnavailable(f"experiment {experiment!r}: no such experiment")
        return found.experiment_id

    def pages(self, start_ms: int, *, include_spans: bool) -> Iterator[list[Trace]]:
        """Traces with timestamp >= `start_ms`, oldest first, one page at a time."""
        token = None
        while True:
            page = with_retry(
                lambda: self.client.search_traces(
                    locations=[self.experiment_id],
                    filter_string=f"trace.timestamp_ms >= {start_ms}",
                    order_by=["timestamp_ms ASC", "request_id ASC"],
                    max_results=self.page_size,
                    page_token=token,  # noqa: B023 (with_retry calls it before the loop moves on)
                    include_spans=include_spans,
                ),
                f"search traces of experiment {self.experiment_id}",
                self.retry_for_s,
            )
            yield list(page)
            token = page.token
            if not token:
                return

    def with_spans(self, trace_ids: list[str]) -> dict[str, Trace]:
        """The full traces (spans included) of `trace_ids`, in batched lookups."""
        found: dict[str, Trace] = {}
        for i in range(0, len(trace_ids), _IN_CHUNK):
            chunk = trace_ids[i : i + _IN_CHUNK]
            listed = ", ".join(f"'{trace_id}'" for trace_id in chunk)
            traces = with_retry(
                lambda: self.client.search_traces(
                    locations=[self.experiment_id],
                    filter_string=f"trace.request_id IN ({listed})",  # noqa: B023 (called before the loop moves on)
                    max_results=len(chunk),  # noqa: B023
                ),
                f"read {len(chunk)} trace(s)",
                self.retry_for_s,
            )
            found.update((trace.info.trace_id, trace) for trace in traces)
        return found


def _record_metrics(counts: Counts) -> None:
    prometheus_metrics.BRIDGE_TRACES.labels(outcome="mapped").inc(counts.traces_mapped)
    for reason, n in counts.traces_unmapped.items():
        prometheus_metrics.BRIDGE_TRACES.labels(outcome="unmapped").inc(n)
        prometheus_metrics.BRIDGE_UNMAPPED.labels(kind="trace", reason=reason).inc(n)
    for reason, n in counts.assessments_unmapped.items():
        prometheus_metrics.BRIDGE_UNMAPPED.labels(kind="assessment", reason=reason).inc(n)
    for event_type, n in counts.published.items():
        prometheus_metrics.BRIDGE_PUBLISHED.labels(type=event_type).inc(n)


class MlflowBridge:
    """One experiment -> the traces and ratings topics, resuming from the saved position."""

    def __init__(
        self,
        settings: Settings,
        config: BridgeConfig,
        client: MlflowClient | None = None,
        publish: Callable[[list[tuple[str, CloudEvent[Any]]], Settings], int] = send_events,
    ) -> None:
        self.settings = settings
        self.config = config
        self.publish = publish
        self.reader = TraceReader(
            client or MlflowClient(settings.mlflow_tracking_uri),
            config.experiment,
            config.page_size,
            config.retry_for_s,
        )
        safe = re.sub(r"[^\w.-]", "_", self.reader.experiment_id)
        self.state_path = Path(settings.state_dir) / "bridge" / f"mlflow-{safe}.json"
        self.position = self._load() if config.since_ms is None else BridgePosition(self.reader.experiment_id)
        self.counts = Counts()
        self._saved_at = 0.0
        self._topics = {TraceEvent.TYPE: settings.topics.traces, RatingEvent.TYPE: settings.topics.ratings}

    @property
    def _lookback_ms(self) -> int:
        return int(self.config.lookback.total_seconds() * 1000)

    def _load(self) -> BridgePosition:
        if self.state_path.exists():
            position = BridgePosition.from_json(self.state_path.read_text())
            if position.experiment_id == self.reader.experiment_id:
                return position
        return BridgePosition(self.reader.experiment_id)

    def _save(self) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        scratch = self.state_path.with_suffix(".tmp")
        scratch.write_text(self.position.to_json())
        os.replace(scratch, self.state_path)
        self._saved_at = time.monotonic()

    def run_once(self) -> Counts:
        """Scan from the position (minus the look-back) to now; publish what is new; return this pass's counts."""
        start = self.position.scan_start(self.config.since_ms or 0, self._lookback_ms)
        passed = Counts()
        for page in self.reader.pages(start, include_spans=False):
            passed.add(self._handle_page(page))
        self.position.prune(self._lookback_ms)
        self._save()
        self.counts.add(passed)
        return passed

    def _handle_page(self, page: list[Trace]) -> Counts:
        """Plan every trace of the page, publish the events, then commit (and save now and then)."""
        now_ms = int(time.time() * 1000)
        records = [trace_record(trace) for trace in page]
        page_counts = Counts(deferred=sum(not finished(r, now_ms) for r in records))
        records = [r for r in records if finished(r, now_ms)]
        full = self.reader.with_spans([r["trace_id"] for r in records if self.position.needs_spans(r)])
        plans = []
        for record in records:
            if self.position.needs_spans(record):
                if record["trace_id"] not in full:
                    continue  # deleted between the two reads
                record = trace_record(full[record["trace_id"]])
            plans.append((record["trace_id"], self.position.plan(record, self.config.options)))
        events = [(self._topics[event.type], event) for _, plan in plans for event in plan.events]
        if events:
            self.publish(events, self.settings)
        for trace_id, plan in plans:
            self.position.commit(trace_id, plan.seen)
            page_counts.add(plan.counts)
        _record_metrics(page_counts)
        if events and time.monotonic() - self._saved_at >= SAVE_EVERY_S:
            self._save()
        return page_counts

    def follow(
        self, interval_s: float, stop: threading.Event, on_pass: Callable[[Counts], None] | None = None
    ) -> None:
        """`run_once` every `interval_s` until `stop` is set (MlflowUnavailable ends it)."""
        while not stop.is_set():
            counts = self.run_once()
            if on_pass is not None:
                on_pass(counts)
            stop.wait(interval_s)


def experiment_examples(
    settings: Settings, experiment: str, prompt: str, retry_for_s: float = 60.0
) -> list[dict[str, Any]]:
    """`{"inputs", "expectations"}` examples of prompt `prompt` from an experiment's traces that
    carry expectations (the A/B test's data, mapped exactly as the bridge maps them)."""
    reader = TraceReader(MlflowClient(settings.mlflow_tracking_uri), experiment, 100, retry_for_s)
    options = MappingOptions(source="gepa-stream/compare", managed=frozenset({prompt}))
    examples = []
    now_ms = int(time.time() * 1000)
    for page in reader.pages(0, include_spans=True):
        for record in (trace_record(trace) for trace in page):
            if not finished(record, now_ms):
                continue
            try:
                events = trace_events(record, prompt_refs(record, options), options)
            except Unmappable:
                continue
            examples += [
                {"inputs": e.data.inputs, "expectations": e.data.expectations}
                for e in events
                if e.data.expectations
            ]
    return examples


def describe_counts(counts: Counts) -> str:
    """One line: traces mapped and unmapped (by reason), events published, assessments skipped."""

    unmapped = sum(counts.traces_unmapped.values())
    parts = [
        f"{counts.traces_mapped + unmapped} new trace(s): {counts.traces_mapped} mapped, {unmapped} unmapped"
    ]
    if unmapped:
        parts[0] += f" ({listed(counts.traces_unmapped)})"
    parts.append(f"published: {listed(counts.published) or 'nothing'}")
    if counts.assessments_unmapped:
        parts.append(f"human assessments unmapped: {listed(counts.assessments_unmapped)}")
    if counts.deferred:
        parts.append(f"{counts.deferred} deferred (MLflow still writing them; retried next pass)")
    return "; ".join(parts)
