"""OpenTelemetry spans -> events: spans recorded by the real OpenInference, OpenLLMetry and
official OpenTelemetry GenAI (`opentelemetry-instrumentation-openai-v2`) instrumentation of the
`openai` client (against the fake provider), decoded from both Kafka encodings; the MLflow preset,
per-prompt attributes, feedback (no library at hand emits evaluation events) and unmappable spans
on spans built by hand (pure logic)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from handlers.otel_mapping import (
    EVALUATION_EVENT,
    MEMO_ENTRIES,
    Mapped,
    OtelOptions,
    PromptAttributes,
    SpanCounts,
    detect,
    payload_records,
    span_records,
)
from handlers.otlp import EVERYTHING, BadPayload, Encoding, Span, SpanEvent, read_spans
from optimization.offline.provider import FakeProvider
from schemas.config import ConfigError, PolicyFile, load_policy_file
from schemas.parse import parse_event
from tests.otel_app import LIBRARIES, OtelApp, deep_span_payload, record_calls, traces_data

PROMPT = "support_router"
OPTIONS = OtelOptions("test/otel", managed=frozenset({PROMPT}))
T0 = 1_795_000_000_000_000_000  # ns


@pytest.fixture(scope="module")
def recorded() -> dict[str, OtelApp]:
    """Four calls through each instrumentation library (OpenInference, OpenLLMetry, the official
    GenAI one), version 3 of the prompt."""
    return record_calls(4, version=3)


def decode_spans(payload: bytes, encoding: Encoding) -> list[Span]:
    """Every span of an OTLP payload, none skipped (raises BadPayload when unreadable)."""
    return read_spans(payload, encoding, EVERYTHING)[0]


def payload_events(
    payloads: list[bytes], encoding: Encoding, options: OtelOptions
) -> tuple[list[Any], SpanCounts]:
    """The events `payload_records` yields, parsed, and its counts."""
    records, counts = payload_records(payloads, encoding, options)
    return [parse_event(record.value) for record in records], counts


def validated(records: list[Mapped]) -> list[Any]:
    """The events of `records`, each checked to be the validated pydantic event's exact JSON."""
    events = [parse_event(record.value) for record in records]
    assert [(r.type, r.key, r.value) for r in records] == [(e.type, e.key, e.to_json()) for e in events]
    return events


def mapped(payload: bytes, encoding: str, options: OtelOptions = OPTIONS) -> tuple[list[Any], SpanCounts]:
    counts = SpanCounts()
    spans = decode_spans(payload, encoding)  # type: ignore[arg-type]
    return validated([r for s in spans for r in span_records(s, options, counts)]), counts


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("encoding", ["otlp_proto", "otlp_json"])
def test_one_trace_event_per_llm_call_with_prompt_version_inputs_and_answer(
    recorded: dict[str, OtelApp], library: str, encoding: str
) -> None:
    app = recorded[library]
    events, counts = mapped(traces_data(app.spans(), encoding), encoding)
    assert (counts.mapped, dict(counts.unmapped), dict(counts.published)) == (4, {}, {"gepa.trace.v1": 4})
    assert [(e.data.prompt, e.data.prompt_version, e.data.inputs, e.data.outputs) for e in events] == [
        (PROMPT, 3, {"ticket": call.ticket}, call.answer) for call in app.calls
    ]
    for event, span in zip(events, app.spans()):
        ids = f"{span.context.trace_id:032x}:{span.context.span_id:016x}"
        assert (event.id, event.data.trace_id, event.key) == (f"otel:{ids}", ids, PROMPT.encode())
        assert event.data.model == "support-router"
        assert event.data.latency_ms == (span.end_time - span.start_time) / 1e6
        assert parse_event(event.to_json()) == event  # a valid contract event


GENAI_LIBRARY_KEYS = {
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.response.id",
    "gen_ai.response.finish_reasons",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.input.messages",
    "gen_ai.output.messages",
}
"""What opentelemetry-instrumentation-openai-v2 2.4b0 (util-genai 1.1b0) writes on a chat span with
the messages captured on the span; the app's span processor adds the prompt's three."""


@pytest.mark.parametrize("encoding", ["otlp_proto", "otlp_json"])
def test_the_official_genai_instrumentations_spans_take_the_genai_preset(
    recorded: dict[str, OtelApp], encoding: str
) -> None:
    """Its chat spans come from util-genai's scope, outside OpenLLMetry's `opentelemetry.instrumentation.*`,
    carry the GenAI attributes and no OpenLLMetry ones, and map as the GenAI preset maps them."""
    app = recorded["genai"]
    payload = traces_data(app.spans(), encoding)
    spans = decode_spans(payload, encoding)  # type: ignore[arg-type]
    assert len(spans) == 4
    for decoded, call in zip(spans, app.calls):
        assert decoded.scope == "opentelemetry.util.genai.handler"
        assert set(decoded.attributes) == GENAI_LIBRARY_KEYS | {
            "gen_ai.prompt.name",
            "gepa.prompt.version",
            "gepa.prompt.variables",
        }
        assert (decoded.attributes["gen_ai.operation.name"], decoded.attributes["gen_ai.request.model"]) == (
            "chat",
            "support-router",
        )
        (message,) = json.loads(decoded.attributes["gen_ai.input.messages"])
        assert message["role"] == "user" and call.ticket in message["parts"][0]["content"]
        preset = detect(decoded)
        assert preset is not None and preset.name == "genai"
    auto, _ = mapped(payload, encoding)
    forced, _ = mapped(payload, encoding, OtelOptions("test/otel", "genai", frozenset({PROMPT})))
    assert [e.to_json() for e in auto] == [e.to_json() for e in forced] and len(auto) == 4


def test_the_official_genai_instrumentations_spans_without_captured_content_have_no_outputs() -> None:
    """By default the library keeps the messages off the span: the call is counted `no_outputs`."""
    with FakeProvider() as provider:
        app = OtelApp("genai", provider, version=3, capture_content=False)
        with app.instrumented():
            app.serve(1)
    (recorded_span,) = app.spans()
    assert "gen_ai.output.messages" not in recorded_span.attributes
    assert recorded_span.attributes["gen_ai.prompt.name"] == PROMPT  # the app's processor still names it
    events, counts = mapped(traces_data(app.spans(), "otlp_proto"), "otlp_proto")
    assert (events, dict(counts.unmapped)) == ([], {"no_outputs": 1})


def test_a_redelivered_batch_maps_to_identical_events(recorded: dict[str, OtelApp]) -> None:
    spans = recorded["openinference"].spans()
    proto, _ = mapped(traces_data(spans, "otlp_proto"), "otlp_proto")
    again, _ = mapped(traces_data(spans, "otlp_proto"), "otlp_proto")
    as_json, _ = mapped(traces_data(spans, "otlp_json"), "otlp_json")
    assert [e.to_json() for e in proto] == [e.to_json() for e in again] == [e.to_json() for e in as_json]


def test_unmanaged_and_unnamed_prompts_are_counted_not_published(recorded: dict[str, OtelApp]) -> None:
    payload = traces_data(recorded["openllmetry"].spans(), "otlp_proto")
    events, counts = mapped(payload, "otlp_proto", OtelOptions("t", managed=frozenset({"other"})))
    assert (events, dict(counts.unmapped)) == ([], {"unmanaged_prompt": 4})
    everything, _ = mapped(payload, "otlp_proto", OtelOptions("t", managed=None))
    assert len(everything) == 4


def span(attributes: dict[str, Any], *, scope: str = "", events: list[SpanEvent] | None = None) -> Span:
    return Span("ab" * 16, "cd" * 8, "llm", scope, T0, T0 + 2_500_000, attributes, events or [])


GENAI = {
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "gpt-x",
    "gen_ai.prompt.name": f"{PROMPT}/2",
    "gepa.prompt.variables": json.dumps({"ticket": "card declined"}),
    "gen_ai.output.messages": json.dumps(
        [{"role": "assistant", "parts": [{"type": "text", "content": "billing"}]}]
    ),
}


def one(
    attributes: dict[str, Any], options: OtelOptions = OPTIONS, **kw: Any
) -> tuple[list[Any], SpanCounts]:
    counts = SpanCounts()
    return validated(span_records(span(attributes, **kw), options, counts)), counts


def test_genai_conventions_preset() -> None:
    (event,), _ = one(GENAI)
    data = event.data
    assert (data.prompt, data.prompt_version, data.inputs, data.outputs, data.model, data.latency_ms) == (
        PROMPT,
        2,
        {"ticket": "card declined"},
        "billing",
        "gpt-x",
        2.5,
    )


def test_mlflow_otlp_export_preset() -> None:
    attributes = {
        "mlflow.spanType": '"LLM"',
        "mlflow.linkedPrompts": json.dumps([{"name": PROMPT, "version": "4"}]),
        "mlflow.spanInputs": json.dumps({"ticket": "parcel lost"}),
        "mlflow.spanOutputs": json.dumps({"choices": [{"message": {"content": "shipping"}}]}),
        "mlflow.llm.model": "gpt-y",
    }
    (event,), _ = one(attributes)
    assert (event.data.prompt_version, event.data.inputs, event.data.outputs, event.data.model) == (
        4,
        {"ticket": "parcel lost"},
        "shipping",
        "gpt-y",
    )


def test_a_prompts_own_attributes_from_the_policy_file() -> None:
    policies = PolicyFile.model_validate(
        {
            "prompts": [
                {
                    "name": PROMPT,
                    "otel": {
                        "prompt_attribute": "app.prompt",
                        "version_attribute": "app.prompt_rev",
                        "variables_attribute": "metadata#vars",
                    },
                },
                {"name": "other"},
            ]
        }
    )
    options = OtelOptions.from_policy(policies, "t")
    assert options.attributes == {PROMPT: PromptAttributes("app.prompt", "app.prompt_rev", "metadata#vars")}
    own = {
        **{k: v for k, v in GENAI.items() if k not in ("gen_ai.prompt.name", "gepa.prompt.variables")},
        "app.prompt": PROMPT,
        "app.prompt_rev": "v7",
        "metadata": json.dumps({"vars": {"ticket": "x"}}),
    }
    (event,), _ = one(own, options)
    assert (event.data.prompt, event.data.prompt_version, event.data.inputs) == (PROMPT, 7, {"ticket": "x"})
    # the preset's attribute no longer names this prompt; it still names the others
    assert one(GENAI, options)[1].unmapped == {"unmanaged_prompt": 1}
    assert len(one({**GENAI, "gen_ai.prompt.name": "other"}, options)[0]) == 1


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"gen_ai.operation.name": "embeddings"}, "not_llm"),
        ({"gen_ai.prompt.name": None}, "no_prompt"),
        ({"gen_ai.prompt.name": "someone_else"}, "unmanaged_prompt"),
        ({"gepa.prompt.version": "latest"}, "bad_version"),
        ({"gepa.prompt.version": "\u00b2"}, "bad_version"),  # a digit to str.isdigit, not to int()
        ({"gepa.prompt.variables": {"ticket": b"\xff\x00"}}, "invalid_data"),  # bytes: no JSON value
        ({"gepa.prompt.variables": None}, "no_inputs"),
        ({"gepa.prompt.variables": "{not json"}, "bad_inputs"),
        ({"gepa.prompt.variables": "[1, 2]"}, "bad_inputs"),
        ({"gen_ai.output.messages": None}, "no_outputs"),
    ],
)
def test_unmappable_spans_are_counted_by_reason(change: dict[str, Any], reason: str) -> None:
    attributes = {k: v for k, v in {**GENAI, **change}.items() if v is not None}
    events, counts = one(attributes)
    assert (events, dict(counts.unmapped), counts.mapped) == ([], {reason: 1}, 0)


def test_the_prompt_memo_answers_as_a_fresh_read_and_stays_bounded() -> None:
    """Prompt names are remembered per distinct value: a remembered answer (managed, unmanaged) is
    the first one, a list value (unhashable) still maps, and unique names never grow the memo past
    its bound."""
    options = OtelOptions("t", managed=frozenset({PROMPT}))
    for _ in range(2):
        assert one(GENAI, options)[1].mapped == 1
        assert dict(one({**GENAI, "gen_ai.prompt.name": "someone_else"}, options)[1].unmapped) == {
            "unmanaged_prompt": 1
        }
    listed = {**GENAI, "gepa.prompt": [{"name": PROMPT, "version": "4"}]}  # a list: read, not remembered
    assert [e.data.prompt_version for e in one(listed, options)[0]] == [4]
    counts = SpanCounts()
    for i in range(MEMO_ENTRIES + 100):
        span_records(span({**GENAI, "gen_ai.prompt.name": f"stranger_{i}"}), options, counts)
    assert dict(counts.unmapped) == {"unmanaged_prompt": MEMO_ENTRIES + 100}
    assert 0 < len(options.routes["genai"].found) <= MEMO_ENTRIES


def test_a_name_that_is_no_prompt_name_is_invalid_data_when_every_prompt_is_published() -> None:
    events, counts = one({**GENAI, "gen_ai.prompt.name": "bad name!"}, OtelOptions("t"))
    assert (events, dict(counts.unmapped)) == ([], {"invalid_data": 1})


def test_a_span_outside_the_contracts_time_bounds_is_counted() -> None:
    counts = SpanCounts()
    ancient = Span("ab" * 16, "cd" * 8, "llm", "", 5, 10, dict(GENAI))
    assert span_records(ancient, OPTIONS, counts) == []
    assert counts.unmapped == {"bad_time": 1}


def test_genai_evaluation_events_on_a_span_become_ratings() -> None:
    evaluations = [
        SpanEvent(
            EVALUATION_EVENT,
            T0 + 10,
            {"gen_ai.evaluation.name": "user", "gen_ai.evaluation.score.value": 0.0},
        ),
        SpanEvent(
            EVALUATION_EVENT,
            T0 + 20,
            {
                "gen_ai.evaluation.name": "sme",
                "gen_ai.evaluation.score.label": "good",
                "gen_ai.evaluation.explanation": "ok",
            },
        ),
        SpanEvent(EVALUATION_EVENT, T0 + 30, {"gen_ai.evaluation.score.label": "meh"}),
        SpanEvent("other", T0 + 40, {}),
    ]
    events, counts = one(GENAI, events=evaluations)
    trace, *ratings = events
    assert [
        (r.data.trace_id, r.data.rating, r.data.scale, r.data.rater, r.data.comment) for r in ratings
    ] == [
        (trace.data.trace_id, 0.0, "unit", "user", None),
        (trace.data.trace_id, "good", "five_point", "sme", "ok"),
    ]
    assert ratings[0].id == f"{trace.id}:eval:user:{T0 + 10}"
    assert (dict(counts.published), dict(counts.feedback_unmapped)) == (
        {"gepa.trace.v1": 1, "gepa.rating.v1": 2},
        {"unknown_rating": 1},
    )


def test_an_oversize_event_is_counted() -> None:
    options = OtelOptions("t", managed=frozenset({PROMPT}), max_event_bytes=1024)
    big = {**GENAI, "gepa.prompt.variables": json.dumps({"ticket": "x" * 2000})}
    assert one(big, options)[1].unmapped == {"oversize": 1}


@pytest.mark.parametrize(
    ("payload", "encoding", "reason"),
    [
        (b"\x0a\xff\xff\xff\x0f", "otlp_proto", "not_protobuf"),  # truncated
        (b'{"resourceSpans": []}', "otlp_proto", "not_protobuf"),  # wrong encoding
        (b"\xff\xfe not utf-8", "otlp_json", "not_json"),
        (b"[1, 2]", "otlp_json", "bad_otlp_json"),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}',
            "otlp_json",
            "bad_otlp_json",
        ),
        (b'{"resourceSpans": "no"}', "otlp_json", "bad_otlp_json"),
        (b"[" * 100_000 + b"]" * 100_000, "otlp_json", "not_json"),
        (gzip.compress(b"{}", mtime=0), "otlp_json", "not_json"),
    ],
    ids=[
        "truncated",
        "json-as-proto",
        "not-utf8",
        "json-array",
        "bad-hex-id",
        "bad-shape",
        "deep-json",
        "gzip",
    ],
)
def test_undecodable_payloads_raise_bad_payload_with_a_reason(
    payload: bytes, encoding: str, reason: str
) -> None:
    with pytest.raises(BadPayload, match=f"^{reason}$"):
        decode_spans(payload, encoding)  # type: ignore[arg-type]


def test_deeply_nested_attributes_decode_or_are_refused() -> None:
    """An attribute nested 200 levels (past protobuf's own limit of 100) is a bad payload; 40 decode."""
    assert len(decode_spans(deep_span_payload(40), "otlp_proto")) == 1
    with pytest.raises(BadPayload, match="not_protobuf"):
        decode_spans(deep_span_payload(200), "otlp_proto")


@pytest.mark.parametrize("encoding", ["otlp_proto", "otlp_json"])
def test_spans_without_llm_attributes_are_counted_unread(recorded: dict[str, OtelApp], encoding: str) -> None:
    """A batch holding the app's HTTP spans (their own scope) beside the LLM spans: the LLM spans map,
    the others count `not_llm`, as do those of a batch of HTTP spans alone."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    for i in range(3):
        with provider.get_tracer("app.http").start_as_current_span(
            "POST /route", attributes={"http.route": f"/{i}"}
        ):
            pass
    http = list(memory.get_finished_spans())
    mixed = traces_data([*recorded["openinference"].spans(), *http], encoding)
    events, counts = payload_events([mixed, traces_data(http, encoding)], encoding, OPTIONS)  # type: ignore[arg-type]
    assert (len(events), counts.mapped, dict(counts.unmapped)) == (4, 4, {"not_llm": 6})
    assert [e.to_json() for e in events] == [e.to_json() for e in mapped(mixed, encoding)[0]]


def test_a_typo_in_a_prompts_otel_settings_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(f"prompts:\n  - name: {PROMPT}\n    otel: {{prompt_atribute: app.prompt}}\n")
    with pytest.raises(
        ConfigError, match=r"prompts\[0\] \(support_router\)\.otel\.prompt_atribute: is not a known setting"
    ):
        load_policy_file(path)


@pytest.mark.parametrize("encoding", ["otlp_proto", "otlp_json"])
def test_payload_records_carry_each_events_own_json(recorded: dict[str, OtelApp], encoding: str) -> None:
    """The bridge produces the bytes the size check measured: each event's JSON, serialized once."""
    payload = traces_data(recorded["openinference"].spans(), encoding)
    records, counts = payload_records([payload], encoding, OPTIONS)  # type: ignore[arg-type]
    events, _ = payload_events([payload], encoding, OPTIONS)  # type: ignore[arg-type]
    assert counts.mapped == len(records) == 4
    assert [(r.type, r.key, r.value) for r in records] == [(e.type, e.key, e.to_json()) for e in events]


def test_a_marker_outside_the_spans_attribute_keys_changes_no_count() -> None:
    """A marker elsewhere in the payload (a resource attribute, an attribute's value) leaves spans
    without one among their attribute keys `not_llm`, as no preset takes them."""
    from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

    message = TracesData()
    resource_spans = message.resource_spans.add()
    marker = resource_spans.resource.attributes.add()
    marker.key, marker.value.string_value = "openinference.span.kind", "LLM"
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "app.http"
    for i in range(3):
        added = scope_spans.spans.add()
        added.trace_id, added.span_id, added.name = bytes(16), bytes([i + 1]) * 8, "GET /"
        value = added.attributes.add()
        value.key, value.value.string_value = "http.route", "openinference.span.kind"
    events, counts = payload_events([message.SerializeToString()], "otlp_proto", OPTIONS)
    assert (events, dict(counts.unmapped)) == ([], {"not_llm": 3})
