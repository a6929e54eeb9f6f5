"""Prometheus metrics the daemon exports on /metrics (names are a contract: the Grafana
dashboard and alerts use them)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "gepa_stream_events_total", "Valid events consumed, by event type and topic.", ["type", "topic"]
)
DEAD_LETTERS = Counter(
    "gepa_stream_dead_letters_total", "Records sent to the dead-letter topic, by reason.", ["reason"]
)
DUPLICATES = Counter(
    "gepa_stream_duplicate_events_total",
    "Events that changed nothing (redelivered or repeated facts).",
    ["type"],
)
WINDOW_EXAMPLES = Gauge(
    "gepa_stream_window_examples", "Labeled examples in the window, per prompt.", ["prompt"]
)
WINDOW_NEW_EXAMPLES = Gauge(
    "gepa_stream_window_new_examples", "Examples labeled since the last optimization.", ["prompt"]
)
ROLLING_SCORE = Gauge(
    "gepa_stream_rolling_score", "Mean normalised rating/score over the window.", ["prompt"]
)
TRIGGERS = Counter(
    "gepa_stream_triggers_total", "Optimization requests fired, by prompt and rule.", ["prompt", "rule"]
)
PROCESSING_SECONDS = Histogram(
    "gepa_stream_processing_seconds",
    "Time to handle one consumed record, by topic.",
    ["topic"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
JOBS_IN_FLIGHT = Gauge("gepa_stream_jobs_in_flight", "Optimization jobs running in this process.")
JOBS = Counter(
    "gepa_stream_jobs_total", "Optimization jobs finished, by outcome (completed/failed/skipped).", ["status"]
)
MODEL_CALLS = Counter(
    "gepa_stream_model_calls_total",
    "Model calls completed by optimization jobs, by prompt and role.",
    ["prompt", "role"],
)
MODEL_TOKENS = Counter(
    "gepa_stream_model_tokens_total",
    "Tokens of the model calls of optimization jobs, by prompt, role and kind (prompt/completion).",
    ["prompt", "role", "kind"],
)
MODEL_COST = Counter(
    "gepa_stream_model_cost_usd_total",
    "Estimated USD of the model calls of optimization jobs (litellm's cost map), by prompt and role.",
    ["prompt", "role"],
)
PROMOTIONS = Counter(
    "gepa_stream_promotions_total", "Promotion decisions, by decision.", ["prompt", "decision"]
)
GUARD_RATINGS = Gauge(
    "gepa_stream_guard_ratings",
    "Live ratings the guard compares, per prompt and side (new version / replaced version).",
    ["prompt", "side"],
)
GUARD_DIFFERENCE = Gauge(
    "gepa_stream_guard_difference",
    "Mean rating of the new version minus the replaced one's, per prompt.",
    ["prompt"],
)
GUARD_BOUND = Gauge(
    "gepa_stream_guard_bound",
    "Anytime-valid bounds (lower/upper) of that difference, per prompt.",
    ["prompt", "bound"],
)
GUARD_STATE = Gauge(
    "gepa_stream_guard_state",
    "1 for the guard's state (watching, confirmed, rolled_back, ...), per prompt.",
    ["prompt", "state"],
)
GUARD_GAUGES = (GUARD_RATINGS, GUARD_DIFFERENCE, GUARD_BOUND, GUARD_STATE)
POLICY_RELOADS = Counter(
    "gepa_stream_policy_reloads_total",
    "Policy file reloads without a restart, by outcome (loaded / refused: invalid, the old one stays).",
    ["outcome"],
)
POLICY_ERROR = Gauge(
    "gepa_stream_policy_error",
    "1 while the policy file on disk is invalid (the last valid one is in effect).",
)
ROLLOUT_SHARE = Gauge(
    "gepa_stream_rollout_traffic_share",
    "The canary's share of traffic under a staged rollout (1 promoted, 0 aborted), per prompt.",
    ["prompt"],
)
ROLLOUT_STAGE = Gauge(
    "gepa_stream_rollout_stage", "The rollout's stage (0 = the first share), per prompt.", ["prompt"]
)
ROLLOUT_RATINGS = Gauge(
    "gepa_stream_rollout_ratings",
    "Live ratings since the canary started, per prompt and arm (canary / production).",
    ["prompt", "arm"],
)
ROLLOUT_MEAN = Gauge(
    "gepa_stream_rollout_mean_rating",
    "Mean live rating since the canary started, per prompt and arm.",
    ["prompt", "arm"],
)
ROLLOUT_BOUND = Gauge(
    "gepa_stream_rollout_bound",
    "Anytime-valid bounds (lower/upper) of canary minus production, per prompt.",
    ["prompt", "bound"],
)
ROLLOUT_NEEDED = Gauge(
    "gepa_stream_rollout_votes_needed",
    "Ratings an arm still needs in this stage before the canary can advance, per prompt and arm.",
    ["prompt", "arm"],
)
ROLLOUT_STATE = Gauge(
    "gepa_stream_rollout_state",
    "1 for the rollout's state (canary, promoted, canary_aborted), per prompt.",
    ["prompt", "state"],
)
ROLLOUT_GAUGES = (
    ROLLOUT_SHARE,
    ROLLOUT_STAGE,
    ROLLOUT_RATINGS,
    ROLLOUT_MEAN,
    ROLLOUT_BOUND,
    ROLLOUT_NEEDED,
    ROLLOUT_STATE,
)
BRIDGE_TRACES = Counter(
    "gepa_stream_bridge_traces_total",
    "MLflow traces read by the bridge, by outcome (mapped/unmapped).",
    ["outcome"],
)
BRIDGE_UNMAPPED = Counter(
    "gepa_stream_bridge_unmapped_total",
    "Traces and human assessments the bridge could not map, by kind and reason.",
    ["kind", "reason"],
)
BRIDGE_PUBLISHED = Counter(
    "gepa_stream_bridge_published_total", "Events the bridge published, by event type.", ["type"]
)
BRIDGE_RETRIES = Counter(
    "gepa_stream_bridge_retries_total", "MLflow calls the bridge retried after a transient error."
)
OTEL_SPANS = Counter(
    "gepa_stream_otel_spans_total",
    "OpenTelemetry spans read by the OTel bridge, by outcome (mapped/unmapped).",
    ["outcome"],
)
OTEL_UNMAPPED = Counter(
    "gepa_stream_otel_unmapped_total",
    "Spans and span feedback events the OTel bridge could not map, by kind and reason.",
    ["kind", "reason"],
)
OTEL_PUBLISHED = Counter(
    "gepa_stream_otel_published_total", "Events the OTel bridge published, by event type.", ["type"]
)
OTEL_BAD_PAYLOADS = Counter(
    "gepa_stream_otel_bad_payloads_total",
    "OTLP payloads the OTel bridge could not decode or refused, by source (kafka/http) and reason.",
    ["source", "reason"],
)
