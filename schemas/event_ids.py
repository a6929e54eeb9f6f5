"""Every deterministic event id, in one place.

Delivery is at-least-once end to end: a replayed trigger, a resumed job or a redelivered command
announces again, under the same id, and every consumer dedupes on it. So an id is derived from
what identifies the fact it announces — never random, never a clock — and two different facts
never share one. `tests/unit/schemas/test_event_ids.py` fails on id formatting anywhere else.
"""

from __future__ import annotations

import uuid

_REQUEST_NAMESPACE = uuid.UUID("6b1d2f04-5d0c-4c7e-9a55-3f1f2a9d7e10")


def request_id(app_id: str, prompt: str, generation: int, snapshot_sha256: str) -> str:
    """An optimization request: replaying the same firing after a crash yields the same id. The
    snapshot digest keeps ids unique when a new broker restarts the generations while MLflow
    and the run directories remain."""
    return str(uuid.uuid5(_REQUEST_NAMESPACE, f"{app_id}/{prompt}/{generation}/{snapshot_sha256}"))


def job_status(request: str, status: str) -> str:
    """A job's `requested`, `started`, `completed` or `failed` event (one each per request)."""
    return f"{request}:{status}"


def job_retrying(request: str, attempt: int) -> str:
    """The `retrying` event after attempt `attempt` (counted attempts) of a request."""
    return f"{request}:retrying:{attempt}"


def command_skipped(command: str) -> str:
    """The `skipped` status answering an `optimize` command that cannot run now."""
    return f"skipped:{command}"


def snapshot_chunk(request: str, chunk: int) -> str:
    """Chunk `chunk` of a request's frozen window."""
    return f"{request}:snapshot:{chunk}"


def registered(request: str, prompt: str) -> str:
    """The `prompt.registered` event of the version a request registered for `prompt` (a dspy
    program registers one per predictor prompt)."""
    return f"{request}:registered:{prompt}"


def job_promotion(request: str, prompt: str) -> str:
    """The gate's decision on the version a request registered for `prompt`."""
    return f"{request}:promotion:{prompt}"


def command_outcome(command: str, prompt: str) -> str:
    """What an approve / reject / rollback command did to `prompt`."""
    return f"{command}:{prompt}"


def guard_verdict(promotion: str, decision: str) -> str:
    """The live guard's verdict on the promotion event `promotion` (also the id of the rollback
    command it sends on `rolled_back`)."""
    return f"{promotion}:guard:{decision}"


def rollout_verdict(promotion: str, stage: int, action: str) -> str:
    """The staged rollout's verdict at `stage` of the rollout the `canary_started` event
    `promotion` began (the id of the canary command it sends)."""
    return f"{promotion}:rollout:{stage}:{action}"


def dead_letter(topic: str, partition: int, offset: int) -> str:
    """The dead letter of the record at (topic, partition, offset): a redelivered bad record yields
    the same one."""
    return f"dlq:{topic}:{partition}:{offset}"


def mlflow_trace(trace_id: str, prompt: str, signature: str) -> str:
    """A trace the MLflow bridge publishes: stable per trace and prompt; a new expectation set
    (`signature`) gives a new id (a new fact to publish)."""
    return f"mlflow:{trace_id}/{prompt}" + (f"#x{signature}" if signature else "")


def mlflow_rating(trace_id: str, prompt: str, assessment_id: str, updated_ms: int) -> str:
    """An assessment the MLflow bridge publishes: stable per assessment and prompt; an edited one
    (a new update time) gives a new id."""
    return f"mlflow:{trace_id}/{prompt}/{assessment_id}@{updated_ms}"


def otel_call(trace_id: str, span_id: str) -> str:
    """The `trace_id` of the example an OpenTelemetry LLM span carries: one call, so two calls in one
    OpenTelemetry trace are two examples (SME ratings of that call name it the same way)."""
    return f"{trace_id}:{span_id}"


def otel_span(trace_id: str, span_id: str) -> str:
    """The trace event of an OpenTelemetry LLM span: a redelivered span maps to the same event."""
    return f"otel:{trace_id}:{span_id}"


def otel_evaluation(trace_id: str, span_id: str, name: str, time_ns: int) -> str:
    """The rating event of an evaluation event on an OpenTelemetry span."""
    return f"{otel_span(trace_id, span_id)}:eval:{name}:{time_ns}"
