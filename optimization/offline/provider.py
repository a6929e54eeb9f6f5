"""A fake OpenAI-compatible provider (demo/test/bench only) serving the offline models over HTTP.

`POST /v1/chat/completions` answers model `<name>` exactly like `offline/<name>`, so
tests, the demo and benchmarks can take the path real users take: litellm model
strings, MLflow `provider:/model` URIs, `OPENAI_BASE_URL`/`api_base`, API-key headers.
It counts requests and tokens, and injects faults on demand (latency, error statuses
with `Retry-After`, connection resets, hangs, malformed JSON) in-process or over HTTP
(`/_fake/faults`, `/_fake/stats`) for other processes. Standard library only;
`python -m optimization.offline.provider --port N` runs it standalone.
"""

from __future__ import annotations

import argparse
import json
import math
import socket
import struct
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from optimization.offline.engine import OFFLINE_MODELS, REFLECTOR, OfflineModelError, chat_answer

DEFAULT_API_KEY = "sk-fake-gepa"
FAULT_KINDS = ("latency", "status", "reset", "hang", "malformed")
_FAULT_PARAMS = {
    "latency": {"ms"},
    "status": {"code", "retry_after"},
    "reset": set(),
    "hang": set(),
    "malformed": set(),
}


@dataclass
class Fault:
    """One injected fault: `kind` with its `params`, for `model` (None = every model), `times` more
    requests (None = forever)."""

    kind: str
    times: int | None = 1
    model: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"kind: unknown fault {self.kind!r} (known: {', '.join(FAULT_KINDS)})")
        unknown = set(self.params) - _FAULT_PARAMS[self.kind]
        if unknown:
            raise ValueError(
                f"{sorted(unknown)[0]}: not a parameter of fault {self.kind!r} (known: {sorted(_FAULT_PARAMS[self.kind])})"
            )
        if self.times is not None and (not isinstance(self.times, int) or self.times < 1):
            raise ValueError(f"times: must be a positive integer or None (forever), got {self.times!r}")
        if self.kind == "latency" and not (
            isinstance(self.params.get("ms"), int | float) and self.params["ms"] >= 0
        ):
            raise ValueError("ms: a latency fault needs ms >= 0")
        if self.kind == "status":
            if self.params.get("code") not in (429, 500, 503):
                raise ValueError(f"code: must be 429, 500 or 503, got {self.params.get('code')!r}")
            retry_after = self.params.get("retry_after")
            if retry_after is not None and not (isinstance(retry_after, int | float) and retry_after >= 0):
                raise ValueError(f"retry_after: must be seconds >= 0 or None, got {retry_after!r}")

    def applies_to(self, model: str) -> bool:
        """Whether this fault targets requests for `model`."""
        return self.model is None or self.model == model


def count_tokens(text: str) -> int:
    """Deterministic token estimate (~4 characters per token, like English text for OpenAI tokenizers)."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def _content_text(content: Any) -> str:
    """The text of an OpenAI message content: a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, error_type: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.error_type, self.code = status, error_type, code


class FakeProvider:
    """An OpenAI-compatible chat-completions server on loopback answering as the offline models.

    1. `start()` serves in a background thread; `base_url` is `http://host:port/v1`.
    2. `inject(kind, times=, model=, **params)` queues a fault; matching requests consume it in order
       (latency faults add up and let the request continue; the first other fault decides the answer).
    3. `stats()` reports requests, tokens served and faults applied per model; `stop()` ends it and
       releases hung requests.

    `reflector_notes`: model `reflector` answers as `offline/reflector?notes=N`, a verbose reflector
    whose prompts grow (a real model string cannot carry the offline options).
    """

    def __init__(
        self, api_key: str = DEFAULT_API_KEY, host: str = "127.0.0.1", port: int = 0, reflector_notes: int = 0
    ) -> None:
        if not isinstance(reflector_notes, int) or reflector_notes < 0:
            raise ValueError(f"reflector_notes: a whole number of words >= 0, got {reflector_notes!r}")
        self.api_key = api_key
        self.reflector_notes = reflector_notes
        self._address = (host, port)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._release = threading.Event()  # set to end hangs and latencies (clear_faults, stop)
        self._connections: set[socket.socket] = set()
        self._stats: dict[str, Any] = {"requests": 0, "by_model": {}}

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (`OPENAI_BASE_URL`, litellm `api_base`)."""
        if self._server is None:
            raise RuntimeError("FakeProvider is not started")
        return f"http://{self._address[0]}:{self._server.server_port}/v1"

    def start(self) -> FakeProvider:
        """Bind and serve in a daemon thread; returns self."""
        self._server = ThreadingHTTPServer(self._address, _handler_class(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-provider", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, release hung requests and close open connections."""
        if self._server is None:
            return
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server = None

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def inject(self, kind: str, *, times: int | None = 1, model: str | None = None, **params: Any) -> Fault:
        """Queue a fault for the next `times` matching requests (None = forever); ValueError on bad fields."""
        fault = Fault(kind, times, model, params)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Drop every queued fault and release requests currently hanging (their connections close)."""
        with self._lock:
            self._faults.clear()
            release, self._release = self._release, threading.Event()
        release.set()

    def stats(self) -> dict[str, Any]:
        """`{"requests": n, "by_model": {model: {"requests", "prompt_tokens", "completion_tokens", "faults"}}}`."""
        with self._lock:
            return json.loads(json.dumps(self._stats))

    def reset_stats(self) -> None:
        """Zero the counters."""
        with self._lock:
            self._stats = {"requests": 0, "by_model": {}}

    def _model_stats(self, model: str) -> dict[str, int]:
        return self._stats["by_model"].setdefault(
            model, {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "faults": 0}
        )

    def _take_faults(self, model: str) -> tuple[float, Fault | None, threading.Event]:
        """Count the request and consume its faults: (total latency ms, the deciding fault, release event)."""
        latency, deciding = 0.0, None
        with self._lock:
            self._stats["requests"] += 1
            counters = self._model_stats(model)
            counters["requests"] += 1
            for fault in list(self._faults):
                if not fault.applies_to(model) or (deciding is not None and fault.kind != "latency"):
                    continue
                if fault.kind == "latency":
                    latency += float(fault.params["ms"])
                else:
                    deciding = fault
                    counters["faults"] += 1
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
            return latency, deciding, self._release

    def _count_tokens(self, model: str, prompt_tokens: int, completion_tokens: int) -> None:
        with self._lock:
            counters = self._model_stats(model)
            counters["prompt_tokens"] += prompt_tokens
            counters["completion_tokens"] += completion_tokens

    def _track(self, connection: socket.socket, open_: bool) -> None:
        with self._lock:
            (self._connections.add if open_ else self._connections.discard)(connection)

    def complete(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """(served model name, OpenAI chat-completion response) for a request body; _HTTPError on bad input."""
        model = body.get("model")
        messages = body.get("messages")
        if not isinstance(model, str) or not isinstance(messages, list) or not messages:
            raise _HTTPError(400, "model and messages are required", "invalid_request_error")
        if body.get("stream"):
            raise _HTTPError(
                400, "stream=true is not supported by the fake provider", "invalid_request_error"
            )
        name, _, query = model.removeprefix("offline/").partition("?")
        if name not in OFFLINE_MODELS:
            raise _HTTPError(
                404,
                f"The model `{model}` does not exist (known: {', '.join(OFFLINE_MODELS)})",
                "invalid_request_error",
                "model_not_found",
            )
        system = "\n".join(_content_text(m.get("content")) for m in messages if m.get("role") == "system")
        others = [m for m in messages if m.get("role") != "system"]
        user = next(
            (_content_text(m.get("content")) for m in reversed(others) if m.get("role") == "user"), ""
        )
        conversation = "\n".join(_content_text(m.get("content")) for m in others)
        try:
            latency = float(parse_qs(query).get("latency_ms", ["0"])[0]) if query else 0.0
        except ValueError:
            raise _HTTPError(
                400, f"latency_ms must be a number in {model!r}", "invalid_request_error"
            ) from None
        if latency > 0:
            time.sleep(latency / 1000)
        try:
            text = chat_answer(
                name,
                system,
                user,
                conversation,
                body.get("response_format") is not None,
                self.reflector_notes if name == REFLECTOR else 0,
            )
        except OfflineModelError as error:
            raise _HTTPError(500, str(error), "server_error") from None
        except ValueError as error:
            raise _HTTPError(400, str(error), "invalid_request_error") from None
        usage = {
            "prompt_tokens": count_tokens(system + conversation),
            "completion_tokens": count_tokens(text),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return name, {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": usage,
        }


def _handler_class(provider: FakeProvider) -> type[BaseHTTPRequestHandler]:
    """The request handler bound to `provider`."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = (
            True  # headers and body are two writes: without it, +40 ms (delayed ACK) per answer
        )

        def setup(self) -> None:
            super().setup()
            provider._track(self.connection, True)

        def finish(self) -> None:
            provider._track(self.connection, False)
            super().finish()

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: tests and benches read `stats()` instead."""

        def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            self._send_raw(status, json.dumps(payload).encode(), headers)

        def _send_raw(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _send_error(self, error: _HTTPError, headers: dict[str, str] | None = None) -> None:
            self._send_json(
                error.status,
                {
                    "error": {
                        "message": str(error),
                        "type": error.error_type,
                        "param": None,
                        "code": error.code,
                    }
                },
                headers,
            )

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                return json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError as error:
                raise _HTTPError(400, f"request body is not JSON: {error}", "invalid_request_error") from None

        def _reset(self) -> None:
            """Abort the connection with a TCP RST (SO_LINGER 0), as a crashed proxy would."""
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True

        def do_GET(self) -> None:
            if self.path == "/_fake/stats":
                self._send_json(200, provider.stats())
            elif self.path == "/v1/models":
                self._send_json(
                    200,
                    {
                        "object": "list",
                        "data": [
                            {"id": name, "object": "model", "owned_by": "gepa-stream"}
                            for name in OFFLINE_MODELS
                        ],
                    },
                )
            else:
                self._send_error(_HTTPError(404, f"no route GET {self.path}", "invalid_request_error"))

        def do_DELETE(self) -> None:
            if self.path == "/_fake/faults":
                provider.clear_faults()
            elif self.path == "/_fake/stats":
                provider.reset_stats()
            else:
                self._send_error(_HTTPError(404, f"no route DELETE {self.path}", "invalid_request_error"))
                return
            self._send_json(200, {"ok": True})

        def do_POST(self) -> None:
            try:
                body = self._body()
                if self.path == "/_fake/faults":
                    self._post_fault(body)
                elif self.path.rstrip("/") in ("/v1/chat/completions", "/chat/completions"):
                    self._chat(body)
                else:
                    raise _HTTPError(404, f"no route POST {self.path}", "invalid_request_error")
            except _HTTPError as error:
                self._send_error(error)

        def _post_fault(self, body: Any) -> None:
            if not isinstance(body, dict) or "kind" not in body:
                raise _HTTPError(400, "kind: required", "invalid_request_error")
            options = dict(body)
            try:
                fault = provider.inject(
                    options.pop("kind"),
                    times=options.pop("times", 1),
                    model=options.pop("model", None),
                    **options,
                )
            except ValueError as error:
                raise _HTTPError(400, str(error), "invalid_request_error") from None
            self._send_json(200, asdict(fault))

        def _chat(self, body: Any) -> None:
            if self.headers.get("Authorization") != f"Bearer {provider.api_key}":
                raise _HTTPError(
                    401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
                )
            if not isinstance(body, dict):
                raise _HTTPError(400, "request body must be a JSON object", "invalid_request_error")
            model = str(body.get("model", "")).removeprefix("offline/").partition("?")[0]
            latency, fault, release = provider._take_faults(model)
            if latency:
                release.wait(latency / 1000)  # cut short when the faults are cleared or the provider stops
            if fault is not None and fault.kind == "hang":
                release.wait()
                return self._reset()
            if fault is not None and fault.kind == "reset":
                return self._reset()
            if fault is not None and fault.kind == "status":
                code, retry_after = fault.params["code"], fault.params.get("retry_after")
                headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else None
                kind = "rate_limit_error" if code == 429 else "server_error"
                return self._send_error(_HTTPError(code, f"fake provider: injected {code}", kind), headers)
            if fault is not None and fault.kind == "malformed":
                return self._send_raw(
                    200,
                    b'{"id": "chatcmpl-malformed", "object": "chat.completion", "choices": [{"index": 0, "mess',
                )
            name, response = provider.complete(body)
            provider._count_tokens(
                name, response["usage"]["prompt_tokens"], response["usage"]["completion_tokens"]
            )
            self._send_json(200, response)

    return Handler


def main(argv: list[str] | None = None) -> None:
    """Run the fake provider in the foreground until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m optimization.offline.provider", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument(
        "--reflector-notes", type=int, default=0, help="words of note after each rule model `reflector` adds"
    )
    args = parser.parse_args(argv)
    try:
        provider = FakeProvider(
            api_key=args.api_key, host=args.host, port=args.port, reflector_notes=args.reflector_notes
        ).start()
    except ValueError as error:
        parser.error(str(error))
    print(f"fake provider at {provider.base_url} (OPENAI_API_KEY={args.api_key})", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        provider.stop()


if __name__ == "__main__":
    main()
