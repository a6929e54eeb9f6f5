"""An OpenTelemetry-instrumented "production app" for the OTel bridge tests: the `openai` client,
instrumented by OpenInference, OpenLLMetry or the OpenTelemetry project's own GenAI instrumentation
(`opentelemetry-instrumentation-openai-v2`), routes support tickets through the fake provider with
the registry prompt's template; the spans the SDK records are exported as the Collector's Kafka
exporter writes them (`TracesData`, `otlp_proto` or `otlp_json`) or with the SDK's own OTLP/HTTP
exporter."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from unittest import mock

import openai
from google.protobuf import json_format
from opentelemetry import context as otel_context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import GEN_AI_PROMPT_NAME

from daemon.broker import free_port
from optimization.offline.datasets import SEED_ROUTER_PROMPT, support_tickets
from optimization.offline.provider import FakeProvider

Library = Literal["openinference", "openllmetry", "genai"]
LIBRARIES: tuple[Library, ...] = ("openinference", "openllmetry", "genai")
GENAI_ENV = {
    # what opentelemetry-instrumentation-openai-v2 2.4b0's docs ask for to put the messages on the
    # span; util-genai 1.1b0 no longer reads the first (it always writes the latest experimental
    # conventions) and reads the second per call
    "OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental",
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "SPAN_ONLY",
}
MODEL = "support-router"  # the fake provider answers it as offline/support-router


class TraceloopPromptContext(SpanProcessor):
    """What the Traceloop SDK's span processor does for a prompt from its registry: it stamps the
    prompt key, version and template variables of the current call on the span OpenLLMetry's
    instrumentation opens (the SDK itself is not a dependency; its attribute names are)."""

    def __init__(self) -> None:
        self.attributes: dict[str, Any] = {}

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        span.set_attributes(self.attributes)


_PROMPT_KEY = otel_context.create_key("gepa.prompt")


@contextmanager
def using_prompt(name: str, version: int, variables: dict[str, Any]) -> Iterator[None]:
    """The app states which registry prompt the code inside renders, in the OpenTelemetry context
    (an in-process value: unlike baggage it is not propagated to the services the app calls, so the
    template variables stay in the process)."""
    token = otel_context.attach(
        otel_context.set_value(
            _PROMPT_KEY,
            {
                GEN_AI_PROMPT_NAME: name,  # the GenAI conventions' attribute for the prompt's name
                "gepa.prompt.version": version,
                "gepa.prompt.variables": json.dumps(variables),
            },
        )
    )
    try:
        yield
    finally:
        otel_context.detach(token)


class GenAIPromptContext(SpanProcessor):
    """The app's span processor for the official GenAI instrumentation, which names no prompt:
    it stamps the prompt `using_prompt` put in the OpenTelemetry context (a context value, not
    baggage) as `gen_ai.prompt.name`, `gepa.prompt.version` and `gepa.prompt.variables` on each
    span started inside it, the LLM span among them."""

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        prompt = otel_context.get_value(_PROMPT_KEY, parent_context)
        if isinstance(prompt, dict):
            span.set_attributes(prompt)


@dataclass
class Call:
    """One LLM call the app made: the ticket, the answer it got, the right category."""

    ticket: str
    answer: str
    expected: str


@dataclass
class OtelApp:
    """The app with one instrumentation library; `spans` are what its SDK recorded."""

    library: Library
    provider: FakeProvider
    prompt: str = "support_router"
    version: int = 1
    exporters: Sequence[SpanExporter] = ()
    memory: InMemorySpanExporter = field(default_factory=InMemorySpanExporter)
    calls: list[Call] = field(default_factory=list)
    capture_content: bool = True  # genai: the messages on the span (the library's default is none)

    @contextmanager
    def instrumented(self) -> Iterator[OtelApp]:
        """The `openai` module instrumented for this app's tracer provider (undone on exit: the
        instrumentors patch the module process-wide)."""
        tracer_provider = TracerProvider()
        self._traceloop = TraceloopPromptContext()
        if self.library == "openllmetry":
            tracer_provider.add_span_processor(self._traceloop)
        elif self.library == "genai":
            tracer_provider.add_span_processor(GenAIPromptContext())
        for exporter in (self.memory, *self.exporters):
            tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        env: dict[str, str] = {}
        if self.library == "openinference":
            from openinference.instrumentation.openai import OpenAIInstrumentor as OpenInference

            instrumentor: Any = OpenInference()
        elif self.library == "openllmetry":
            from opentelemetry.instrumentation.openai import OpenAIInstrumentor as OpenLLMetry

            instrumentor = OpenLLMetry()
        else:
            from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor as GenAI

            instrumentor = GenAI()
            env = GENAI_ENV if self.capture_content else {}
        with mock.patch.dict(os.environ, env):  # while the app runs: the library reads it per call too
            instrumentor.instrument(tracer_provider=tracer_provider)
            try:
                yield self
            finally:
                instrumentor.uninstrument()
                tracer_provider.shutdown()

    def _context(self, ticket: str) -> ExitStack:
        """The prompt of this call, as each library's users state it."""
        stack = ExitStack()
        variables = {"ticket": ticket}
        if self.library == "openinference":
            from openinference.instrumentation import using_metadata, using_prompt_template

            stack.enter_context(using_metadata({"gepa.prompt": self.prompt}))
            stack.enter_context(
                using_prompt_template(
                    template=SEED_ROUTER_PROMPT, variables=variables, version=str(self.version)
                )
            )
        elif self.library == "genai":
            stack.enter_context(using_prompt(self.prompt, self.version, variables))
        else:
            self._traceloop.attributes = {
                "traceloop.prompt.key": self.prompt,
                "traceloop.prompt.version": self.version,
                "traceloop.prompt.template_variables": json.dumps(variables),
            }
        return stack

    def serve(self, n: int, start: int = 0) -> list[Call]:
        """n support tickets routed by the seed prompt through the instrumented client."""
        client = openai.OpenAI(base_url=self.provider.base_url, api_key=self.provider.api_key)
        made = []
        for ticket in support_tickets(start + n)[start:]:
            text = ticket["inputs"]["ticket"]
            with self._context(text):
                reply = client.chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": SEED_ROUTER_PROMPT.replace("{{ticket}}", text)}],
                )
            made.append(
                Call(
                    text, reply.choices[0].message.content or "", ticket["expectations"]["expected_response"]
                )
            )
        client.close()
        self.calls += made
        return made

    def spans(self) -> list[ReadableSpan]:
        return list(self.memory.get_finished_spans())


def record_calls(n: int, version: int) -> dict[str, OtelApp]:
    """`n` calls through each instrumentation library (OpenInference, OpenLLMetry, the official
    GenAI one) with version `version` of the prompt, against a fake provider of their own."""
    apps = {}
    with FakeProvider() as provider:
        for library in LIBRARIES:
            app = OtelApp(library, provider, version=version)
            with app.instrumented():
                app.serve(n)
            apps[library] = app
    return apps


def traces_data(spans: Sequence[ReadableSpan], encoding: str) -> bytes:
    """One Collector Kafka exporter record: the spans as `TracesData`, in protobuf or OTLP JSON
    (camelCase, hex trace and span ids)."""
    message = encode_spans(spans)  # an ExportTraceServiceRequest: the same fields as TracesData
    if encoding == "otlp_proto":
        return message.SerializeToString()
    raw = json_format.MessageToDict(message)
    for resource in raw.get("resourceSpans", []):
        for scope in resource.get("scopeSpans", []):
            for span in scope.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return json.dumps(raw).encode()


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field."""
    key, size = (number << 3) | 2, len(payload)
    out = bytearray([key])
    while True:
        low, size = size & 0x7F, size >> 7
        out.append(low | (0x80 if size else 0))
        if not size:
            return bytes(out) + payload


def deep_span_payload(depth: int) -> bytes:
    """`TracesData` bytes of one span whose attribute `deep` nests `depth` arrays, written field
    by field (the Python protobuf runtime refuses to build a message that deep)."""
    value = _field(1, b"leaf")  # AnyValue.string_value
    for _ in range(depth):
        value = _field(5, _field(1, value))  # AnyValue.array_value -> ArrayValue.values
    attribute = _field(1, b"deep") + _field(2, value)
    span = _field(1, bytes(16)) + _field(2, bytes(8)) + _field(5, b"deep") + _field(9, attribute)
    return _field(1, _field(2, _field(2, span)))  # TracesData.resource_spans.scope_spans.spans


class BridgeProcess:
    """`python -m daemon bridge otel ...` (or `entrypoint bridge otel ...`, e.g. the image's
    `gepa-stream`) as its own process on a free HTTP port, with the daemon's env (broker, topic
    prefix, app id) plus `env`; its stderr (the summary line) goes to `log`."""

    def __init__(
        self,
        env: dict[str, str],
        log: Path,
        *args: str,
        entrypoint: Sequence[str] = (sys.executable, "-m", "daemon"),
    ) -> None:
        self.port = free_port()
        self.log = log
        self.env = {**os.environ, **env}
        self.argv = [*entrypoint, "bridge", "otel", *args, "--http-port", str(self.port)]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> BridgeProcess:
        """Start and wait for its HTTP port (the consumer group joins in the background)."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while self.get("/healthz") is None:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the bridge did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> str | None:
        try:
            with urllib.request.urlopen(self.url(path), timeout=5) as response:
                return response.read().decode()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """POST /v1/traces; (status, body) whatever the status."""
        request = urllib.request.Request(self.url("/v1/traces"), data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def stop(self) -> str:
        """SIGTERM; returns its output (the summary line is last)."""
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(30)
            self.process = None
        return self.log.read_text()

    def kill(self) -> None:
        """SIGKILL: no summary, no final commit."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.process = None
