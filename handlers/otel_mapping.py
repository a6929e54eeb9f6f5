"""OpenTelemetry LLM spans -> trace and rating events (pure; the I/O is `daemon/otel_bridge.py`).

One preset per convention in use names where a span keeps the prompt, its version, the template
variables (-> `inputs`), the answer (-> `outputs`) and the model: OpenInference, OpenLLMetry, the
OpenTelemetry GenAI conventions and MLflow's OTLP export. The policy file may name other attributes
per prompt (`otel:` in a prompt's entry). Ids derive from the span's trace and span ids, so a
redelivered batch yields identical events; a span that cannot be mapped raises `Unmappable` with
the reason its caller counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any, Literal, NamedTuple

import orjson

from handlers.otlp import BadPayload, Encoding, Reads, Span, SpanEvent, read_spans
from handlers.trace_json import trace_event_json
from handlers.trace_mapping import (
    Unmappable,
    build_event_json,
    event_data,
    listed,
    rating_of,
    split_prompt_ref,
)
from schemas import event_ids
from schemas.config import PolicyBook, PolicyFile
from schemas.events import RatingData, RatingEvent, TraceEvent

Convention = Literal["auto", "openinference", "openllmetry", "genai", "mlflow"]
CONVENTIONS: tuple[Convention, ...] = ("auto", "openinference", "openllmetry", "genai", "mlflow")
GEPA_PROMPT = "gepa.prompt"
GEPA_VERSION = "gepa.prompt.version"
GEPA_VARIABLES = "gepa.prompt.variables"
EVALUATION_EVENT = "gen_ai.evaluation.result"
LLM_MARKERS = (
    "openinference.span.kind",
    "gen_ai.operation.name",
    "llm.request.type",
    "mlflow.spanType",
    "mlflow.linkedPrompts",
)
"""Every preset's LLM test reads one of these attributes: a span with none of them is no LLM span."""
OPENLLMETRY_PREFIX = "traceloop."
EVALUATION_KEYS = (
    "gen_ai.evaluation.score.value",
    "gen_ai.evaluation.score.label",
    "gen_ai.evaluation.name",
    "gen_ai.evaluation.explanation",
)
"""The attributes of an evaluation event that a rating reads."""
_GENAI_LLM_OPERATIONS = {"chat", "text_completion", "generate_content"}
_MLFLOW_LLM_TYPES = {"LLM", "CHAT_MODEL", '"LLM"', '"CHAT_MODEL"'}  # MLflow JSON-encodes its values


def _field(value: Any, sub: str) -> Any:
    """`sub` of a JSON object (or its text); the value itself for an empty `sub`."""
    if not sub or value is None:
        return value
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except ValueError:
            return None
    return value.get(sub) if isinstance(value, dict) else None


Paths = tuple[tuple[str, str], ...]
"""Attribute paths split once into (attribute key, JSON field or "")."""


def split_paths(paths: tuple[str, ...]) -> Paths:
    """`key#field` paths as (key, field) pairs (field "" for a plain attribute)."""
    return tuple((key, sub) for key, _, sub in (path.partition("#") for path in paths))


def _first(attributes: Mapping[str, Any], paths: Paths) -> Any:
    """The first value found at `paths` that is neither absent nor empty text."""
    for key, sub in paths:
        value = attributes.get(key)
        if sub:
            value = _field(value, sub)
        if value is not None and value != "":
            return value
    return None


def _message_text(messages: Any) -> str | None:
    """The text of the last message of a GenAI-conventions message list (JSON text or parsed)."""
    if isinstance(messages, str):
        try:
            messages = orjson.loads(messages)
        except ValueError:
            return None
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return None
    parts = messages[-1].get("parts")
    if isinstance(parts, list):
        texts = [p.get("content") for p in parts if isinstance(p, dict) and p.get("type") == "text"]
        return "".join(t for t in texts if isinstance(t, str)) or None
    content = messages[-1].get("content")
    return content if isinstance(content, str) else None


def _json_output(value: Any) -> str | dict[str, Any] | None:
    """A JSON-encoded output (OpenInference `output.value`, MLflow `mlflow.spanOutputs`): a chat
    completion's answer text, a plain string, or the object itself."""
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except ValueError:
            return value or None
    if isinstance(value, dict):
        choices = value.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            message = choices[0].get("message")
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                return message["content"]
        return value
    return value if isinstance(value, str) and value else None


def _openinference_output(attributes: Mapping[str, Any]) -> str | dict[str, Any] | None:
    text = attributes.get("llm.output_messages.0.message.content")
    if isinstance(text, str) and text:
        return text
    value = attributes.get("output.value")
    if attributes.get("output.mime_type") == "application/json":
        return _json_output(value)
    return value if isinstance(value, str) and value else None


def _genai_output(attributes: Mapping[str, Any]) -> str | None:
    legacy = attributes.get("gen_ai.completion.0.content")  # OpenLLMetry's indexed attributes
    if isinstance(legacy, str) and legacy:
        return legacy
    return _message_text(attributes.get("gen_ai.output.messages"))


def _mlflow_output(attributes: Mapping[str, Any]) -> str | dict[str, Any] | None:
    return _json_output(attributes.get("mlflow.spanOutputs"))


def _is_genai_llm(span: Span) -> bool:
    operation = span.attributes.get("gen_ai.operation.name")
    request_type = span.attributes.get("llm.request.type")  # OpenLLMetry before the GenAI names
    return operation in _GENAI_LLM_OPERATIONS or request_type in ("chat", "completion")


@dataclass(frozen=True)
class Preset:
    """Where one convention keeps what an event needs, first match wins in each tuple; `reads`:
    the attributes `is_llm` and `output` read (a span read off the wire holds only those named)."""

    name: Convention
    is_llm: Callable[[Span], bool]
    prompt: tuple[str, ...]
    version: tuple[str, ...]
    variables: tuple[str, ...]
    model: tuple[str, ...]
    output: Callable[[Mapping[str, Any]], str | dict[str, Any] | None]
    reads: tuple[str, ...]


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            "openinference",
            lambda span: span.attributes.get("openinference.span.kind") == "LLM",
            (GEPA_PROMPT, "prompt.id", f"metadata#{GEPA_PROMPT}"),
            ("llm.prompt_template.version", GEPA_VERSION, f"metadata#{GEPA_VERSION}"),
            ("llm.prompt_template.variables", GEPA_VARIABLES),
            ("llm.model_name",),
            _openinference_output,
            ("llm.output_messages.0.message.content", "output.value", "output.mime_type"),
        ),
        Preset(
            "openllmetry",
            _is_genai_llm,
            (
                GEPA_PROMPT,
                "traceloop.prompt.key",
                f"traceloop.association.properties.{GEPA_PROMPT}",
                "gen_ai.prompt.name",
            ),
            ("traceloop.prompt.version", GEPA_VERSION),
            ("traceloop.prompt.template_variables", GEPA_VARIABLES),
            ("gen_ai.response.model", "gen_ai.request.model"),
            _genai_output,
            ("gen_ai.completion.0.content", "gen_ai.output.messages"),
        ),
        Preset(
            "genai",
            _is_genai_llm,
            (GEPA_PROMPT, "gen_ai.prompt.name"),
            (GEPA_VERSION,),
            (GEPA_VARIABLES,),
            ("gen_ai.response.model", "gen_ai.request.model"),
            _genai_output,
            ("gen_ai.completion.0.content", "gen_ai.output.messages"),
        ),
        Preset(
            "mlflow",
            lambda span: (
                span.attributes.get("mlflow.spanType") in _MLFLOW_LLM_TYPES
                or "mlflow.linkedPrompts" in span.attributes
            ),
            (GEPA_PROMPT, "mlflow.linkedPrompts"),
            (GEPA_VERSION,),
            ("mlflow.spanInputs", GEPA_VARIABLES),
            ("mlflow.llm.model",),
            _mlflow_output,
            ("mlflow.spanOutputs",),
        ),
    )
}


def detect(span: Span) -> Preset | None:
    """The convention a span follows, from its attributes and instrumentation scope (None: no LLM convention)."""
    attributes = span.attributes
    if "openinference.span.kind" in attributes:
        return PRESETS["openinference"]
    if "mlflow.spanType" in attributes or "mlflow.linkedPrompts" in attributes:
        return PRESETS["mlflow"]
    if (
        span.scope.startswith("opentelemetry.instrumentation.")
        or "llm.request.type" in attributes
        or any(key.startswith(OPENLLMETRY_PREFIX) for key in attributes)
    ):
        return PRESETS["openllmetry"]
    if "gen_ai.operation.name" in attributes:
        return PRESETS["genai"]
    return None


MEMO_ENTRIES = 4096
"""Distinct attribute values remembered per memo: an app's spans repeat a handful (prompt names,
versions); past the bound a memo starts over, so unique hostile values cost memory up to it only."""


class _Memo(dict[Any, Any]):
    """A dict that starts over once it holds `MEMO_ENTRIES` entries."""

    def remember(self, key: Any, value: Any) -> Any:
        """Store and return `value`."""
        if len(self) >= MEMO_ENTRIES:
            self.clear()
        self[key] = value
        return value


@dataclass(frozen=True, slots=True)
class Route:
    """How a span naming a managed prompt maps: the prompt (and its Kafka key), the version its name
    carries, and where its version, template variables and model are read."""

    prompt: str
    key: bytes
    named_version: int | None
    version: Paths
    variables: Paths
    model: Paths


@dataclass
class _Routes:
    """A preset's prompt paths, in order, and per distinct tuple of the values a span holds there,
    its Route or the reason it has none (remembered: an app's spans name a handful of prompts)."""

    paths: tuple[str, ...]
    found: _Memo = field(default_factory=_Memo)

    @cached_property
    def split(self) -> Paths:
        """The paths as (attribute key, JSON field) pairs."""
        return split_paths(self.paths)

    @cached_property
    def keys(self) -> tuple[str, ...]:
        """The attribute key of each path."""
        return tuple(key for key, _ in self.split)


@dataclass(frozen=True)
class PromptAttributes:
    """A prompt's own attribute names (policy file `otel:`); None keeps the preset's."""

    prompt: str | None = None
    version: str | None = None
    variables: str | None = None


NO_OWN_ATTRIBUTES = PromptAttributes()


@dataclass(frozen=True)
class OtelOptions:
    """How spans map: the convention (or auto), the managed prompts and their attribute names."""

    source: str
    convention: Convention = "auto"
    managed: Container[str] | None = None  # the policy's prompts (patterns resolve on `in`)
    attributes: dict[str, PromptAttributes] = field(default_factory=dict)
    max_event_bytes: int = 512 * 1024

    @cached_property
    def preset(self) -> Preset | None:
        """The convention's preset; None for `auto` (each span's own, `detect`)."""
        return PRESETS.get(self.convention)

    @cached_property
    def routes(self) -> dict[str, _Routes]:
        """Per preset, where a span may name its prompt, in order (the prompts' own attributes, then
        the preset's), and what each distinct naming resolved to."""
        own = tuple(a.prompt for a in self.attributes.values() if a.prompt)
        return {name: _Routes(tuple(dict.fromkeys(own + preset.prompt))) for name, preset in PRESETS.items()}

    @cached_property
    def reads(self) -> Reads:
        """What the presets and the prompts' own attribute names read of a span (`read_spans`)."""
        own = [path for a in self.attributes.values() for path in (a.prompt, a.version, a.variables) if path]
        paths = [
            *own,
            *(path for p in PRESETS.values() for path in (*p.prompt, *p.version, *p.variables, *p.model)),
        ]
        keys = [key for key, _ in split_paths(tuple(paths))]
        return Reads(
            LLM_MARKERS,
            tuple(dict.fromkeys([*keys, *(key for p in PRESETS.values() for key in p.reads)])),
            (OPENLLMETRY_PREFIX,),
            EVALUATION_KEYS,
        )

    @classmethod
    def from_policy(
        cls,
        policies: PolicyFile | None,
        source: str,
        convention: Convention = "auto",
        max_event_bytes: int = 512 * 1024,
    ) -> OtelOptions:
        """Options for the policy file's prompts (None: every prompt, the presets' attributes)."""
        if policies is None:
            return cls(source, convention, max_event_bytes=max_event_bytes)
        return cls(
            source,
            convention,
            PolicyBook(policies),
            {
                p.name: PromptAttributes(
                    p.otel.prompt_attribute, p.otel.version_attribute, p.otel.variables_attribute
                )
                for p in policies.prompts
                if p.otel is not None
            },
            max_event_bytes,
        )


def _prompt_names(value: Any) -> list[tuple[str, int | None]]:
    """(name, version) named by an attribute value: `name`, `name/3`, `prompts:/name/3`, or MLflow's
    linked-prompts list `[{"name", "version"}]` (JSON text or parsed)."""
    if value is None:
        return []
    for _ in range(2):  # MLflow's export writes the list as JSON text inside a JSON string
        if isinstance(value, str) and value.lstrip().startswith(("[", '"')):
            try:
                value = orjson.loads(value)
            except ValueError:
                return []
    if isinstance(value, list):
        return [
            (str(p["name"]), int(p["version"]) if str(p.get("version", "")).isdigit() else None)
            for p in value
            if isinstance(p, dict) and p.get("name")
        ]
    if isinstance(value, str) and value.strip():
        try:
            return [split_prompt_ref(value)]
        except Unmappable:
            return []
    return []


def _route(span: Span, preset: Preset, options: OtelOptions) -> Route:
    """The Route of the managed prompt a span names (see `_named_prompt`), or Unmappable."""
    routes = options.routes[preset.name]
    values = tuple(map(span.attributes.get, routes.keys))
    try:
        found = routes.found.get(values)
    except TypeError:  # a list or map value: read, not remembered
        found = _named_prompt(values, routes, preset, options)
    else:
        if found is None:
            found = routes.found.remember(values, _named_prompt(values, routes, preset, options))
    if isinstance(found, str):
        raise Unmappable(found)
    return found


def _named_prompt(
    values: tuple[Any, ...], routes: _Routes, preset: Preset, options: OtelOptions
) -> Route | str:
    """The Route of the first managed prompt named at the prompt paths (`values`, one per path): a
    prompt with its own `prompt_attribute` is named only there, any other by the preset's
    attributes; else the reason (`unmanaged_prompt`, `no_prompt`)."""
    named = False
    for path, (_, sub), value in zip(routes.paths, routes.split, values, strict=True):
        for name, version in _prompt_names(_field(value, sub)):
            named = True
            own = options.attributes.get(name, NO_OWN_ATTRIBUTES)
            if (own.prompt == path if own.prompt else path in preset.prompt) and (
                options.managed is None or name in options.managed
            ):
                return Route(
                    name,
                    name.encode(),
                    version,
                    split_paths((own.version,) if own.version else preset.version),
                    split_paths((own.variables,) if own.variables else preset.variables),
                    split_paths(preset.model),
                )
    return "unmanaged_prompt" if named else "no_prompt"


def _version(attributes: Mapping[str, Any], route: Route) -> int | None:
    value = _first(attributes, route.version)
    if value is None:
        return route.named_version
    version = _parse_version(value if isinstance(value, str) else str(value))
    if version is None:
        raise Unmappable("bad_version")
    return version


@lru_cache(maxsize=MEMO_ENTRIES)
def _parse_version(text: str) -> int | None:
    """`3`, `v3`, ` V3 ` -> 3; None for anything else ("²" is a digit that int() refuses)."""
    text = text.strip().lower().removeprefix("v")
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        return None
    return int(text)


def _variables(attributes: Mapping[str, Any], paths: Paths) -> dict[str, Any]:
    value = _first(attributes, paths)
    if value is None:
        raise Unmappable("no_inputs")
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except (ValueError, RecursionError):
            raise Unmappable("bad_inputs") from None
    if not isinstance(value, dict) or not value:
        raise Unmappable("bad_inputs")
    return value


def span_trace_id(span: Span) -> str:
    """The event's `trace_id`: one LLM call, so two calls in one OpenTelemetry trace are two examples.
    SME ratings of that call name it the same way."""
    return event_ids.otel_call(span.trace_id, span.span_id)


@dataclass
class SpanCounts:
    """Spans seen and what became of them: mapped, unmapped by reason, feedback unmapped by reason,
    events by type, payloads that could not be decoded by reason."""

    mapped: int = 0
    unmapped: Counter[str] = field(default_factory=Counter)
    feedback_unmapped: Counter[str] = field(default_factory=Counter)
    published: Counter[str] = field(default_factory=Counter)
    bad_payloads: Counter[str] = field(default_factory=Counter)

    def add(self, other: SpanCounts) -> None:
        """Accumulate `other` into these counts."""
        self.mapped += other.mapped
        for mine, theirs in (
            (self.unmapped, other.unmapped),
            (self.feedback_unmapped, other.feedback_unmapped),
            (self.published, other.published),
            (self.bad_payloads, other.bad_payloads),
        ):
            mine.update(theirs)

    def describe(self) -> str:
        """One line: spans mapped and unmapped (by reason), events published, bad payloads."""
        unmapped = sum(self.unmapped.values())
        parts = [f"{self.mapped + unmapped} span(s): {self.mapped} mapped, {unmapped} unmapped"]
        if unmapped:
            parts[0] += f" ({listed(self.unmapped)})"
        parts.append(f"published: {listed(self.published) or 'nothing'}")
        if self.feedback_unmapped:
            parts.append(f"feedback unmapped: {listed(self.feedback_unmapped)}")
        if self.bad_payloads:
            parts.append(f"bad payloads: {listed(self.bad_payloads)}")
        return "; ".join(parts)


class Mapped(NamedTuple):
    """An event to produce: its type, Kafka key (the prompt) and JSON, serialized once (the size
    check's bytes are the ones produced)."""

    type: str
    key: bytes
    value: bytes


def _rating(event: SpanEvent, span: Span, route: Route, options: OtelOptions) -> Mapped:
    """A GenAI `gen_ai.evaluation.result` span event -> `gepa.rating.v1` (score value, else label)."""
    attributes = event.attributes
    value = attributes.get("gen_ai.evaluation.score.value")
    rating, scale = rating_of(value if value is not None else attributes.get("gen_ai.evaluation.score.label"))
    name = attributes.get("gen_ai.evaluation.name")
    explanation = attributes.get("gen_ai.evaluation.explanation")
    _, value = build_event_json(
        RatingEvent,
        event_ids.otel_evaluation(span.trace_id, span.span_id, str(name or ""), event.time_ns),
        event_data(
            RatingData,
            prompt=route.prompt,
            trace_id=span_trace_id(span),
            rating=rating,
            scale=scale,
            comment=explanation if isinstance(explanation, str) and explanation else None,
            rater=str(name) if name else None,
        ),
        (event.time_ns or span.end_ns) // 1_000_000,
        options.source,
        options.max_event_bytes,
    )
    return Mapped(RatingEvent.TYPE, route.key, value)


def span_records(span: Span, options: OtelOptions, counts: SpanCounts) -> list[Mapped]:
    """The events one span yields: its `gepa.trace.v1` and one `gepa.rating.v1` per evaluation
    event on it; a span that cannot be mapped yields none and is counted by reason."""
    preset = options.preset or detect(span)
    attributes = span.attributes
    try:
        if preset is None or not preset.is_llm(span):
            raise Unmappable("not_llm")
        route = _route(span, preset, options)
        outputs = preset.output(attributes)
        if outputs is None:
            raise Unmappable("no_outputs")
        model = _first(attributes, route.model)
        if isinstance(model, str) and model.startswith('"'):  # MLflow JSON-encodes its values
            model = _json_output(model)
        trace = trace_event_json(
            event_ids.otel_span(span.trace_id, span.span_id),
            span.end_ns // 1_000_000,
            options.source,
            options.max_event_bytes,
            prompt=route.prompt,
            prompt_version=_version(attributes, route),
            trace_id=span_trace_id(span),
            inputs=_variables(attributes, route.variables),
            outputs=outputs,
            model=model if isinstance(model, str) else None,
            latency_ms=(span.end_ns - span.start_ns) / 1e6 if span.end_ns > span.start_ns else 0.0,
        )
    except Unmappable as reason:
        counts.unmapped[str(reason)] += 1
        return []
    counts.mapped += 1
    counts.published[TraceEvent.TYPE] += 1
    records = [Mapped(TraceEvent.TYPE, route.key, trace)]
    for event in span.events:
        if event.name != EVALUATION_EVENT:
            continue
        try:
            records.append(_rating(event, span, route, options))
        except Unmappable as reason:
            counts.feedback_unmapped[str(reason)] += 1
        else:
            counts.published[RatingEvent.TYPE] += 1
    return records


def payload_records(
    payloads: list[bytes], encoding: Encoding, options: OtelOptions, counts: SpanCounts | None = None
) -> tuple[list[Mapped], SpanCounts]:
    """Every event the payloads' spans yield, each with its JSON, and the counts (into `counts` if
    given): an undecodable payload is one bad payload; spans that cannot be LLM spans (no LLM marker
    among their attributes) are counted `not_llm` without being read."""
    counts = SpanCounts() if counts is None else counts
    records: list[Mapped] = []
    for payload in payloads:
        try:
            spans, skipped = read_spans(payload, encoding, options.reads)
        except BadPayload as reason:
            counts.bad_payloads[str(reason)] += 1
            continue
        if skipped:
            counts.unmapped["not_llm"] += skipped
        for span in spans:
            records += span_records(span, options, counts)
    return records, counts
