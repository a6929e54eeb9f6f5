"""A `gepa.trace.v1` event's JSON written straight from values of known types, without a pydantic pass.

The bytes are those of the validated model (`build_event_json`): same fields, order and formatting
(`tests/unit/handlers/test_trace_json.py` compares them). Whatever this check cannot vouch for (an
odd type, a time near the contract's bounds, a value orjson refuses) goes through the model, so the
result, or the `Unmappable` reason, is always the model's; the OTel bridge maps an LLM span ~3x cheaper.
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson

from handlers.trace_mapping import Unmappable, build_event_json, event_data
from schemas.events import EARLIEST_EVENT_TIME, INT64_MAX, MAX_CLOCK_SKEW, TraceData, TraceEvent

_PROMPT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,254}")  # `PromptName`, whole string
_MAX_IDENTIFIER = 512
_EARLIEST_MS = int(EARLIEST_EVENT_TIME.timestamp() * 1000)
_SKEW_MS = int(MAX_CLOCK_SKEW.total_seconds() * 1000) - 60_000
"""A minute short of the contract's skew: within a minute of either bound, the model decides."""


@lru_cache(maxsize=4096, typed=True)
def _plain(prompt: Any, prompt_version: Any, source: Any, model: Any) -> bool:
    """Whether an event's per-prompt values pass the model's checks as they are (remembered: a
    stream repeats a handful of prompts, versions, sources and models)."""
    return (
        type(prompt) is str
        and _PROMPT_NAME.fullmatch(prompt) is not None
        and (prompt_version is None or (type(prompt_version) is int and 0 < prompt_version <= INT64_MAX))
        and type(source) is str
        and bool(source)
        and (model is None or type(model) is str)
    )


@lru_cache(maxsize=4096)
def _second_text(second: int) -> str:
    return datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")


_FRACTIONS = ("Z", *(f".{milli:03d}000Z" for milli in range(1, 1000)))


def utc_text(ms: int) -> str:
    """Epoch ms as the model writes an event's time: `2026-12-05T10:44:24.123000Z`, no fraction on
    a whole second."""
    return _second_text(ms // 1000) + _FRACTIONS[ms % 1000]


def trace_event_json(
    id: str,
    ms: int,
    source: str,
    max_event_bytes: int,
    *,
    prompt: str,
    prompt_version: int | None,
    trace_id: str,
    inputs: dict[str, Any],
    outputs: str | dict[str, Any],
    model: str | None,
    latency_ms: float,
) -> bytes:
    """The JSON of the `gepa.trace.v1` event at `ms` (epoch ms), or Unmappable as `build_event_json`
    raises it (`invalid_data`, `bad_time`, `oversize`)."""
    try:
        plain = _plain(prompt, prompt_version, source, model)
    except TypeError:  # an unhashable value: the model's call
        plain = False
    if (
        plain
        and type(ms) is int
        and _EARLIEST_MS + 60_000 <= ms < time.time() * 1000 + _SKEW_MS
        and type(id) is str
        and 0 < len(id) <= _MAX_IDENTIFIER
        and type(trace_id) is str
        and 0 < len(trace_id) <= _MAX_IDENTIFIER
        and type(inputs) is dict
        and inputs
        and type(outputs) in (str, dict)
        and type(latency_ms) is float
        and 0.0 <= latency_ms < math.inf
    ):
        data = {
            "prompt": prompt,
            "prompt_version": prompt_version,
            "trace_id": trace_id,
            "inputs": inputs,
            "outputs": outputs,
            "expectations": {},
            "scores": {},
            "model": model,
            "latency_ms": latency_ms,
            "attributes": {},
        }
        if prompt_version is None:
            del data["prompt_version"]
        if model is None:
            del data["model"]
        try:
            value = orjson.dumps(
                {
                    "specversion": "1.0",
                    "id": id,
                    "source": source,
                    "type": TraceEvent.TYPE,
                    "time": utc_text(ms),
                    "subject": prompt,
                    "datacontenttype": "application/json",
                    "data": data,
                }
            )
        except orjson.JSONEncodeError:  # bytes, big integers, lone surrogates: the model's call
            pass
        else:
            if len(value) > max_event_bytes:
                raise Unmappable("oversize")
            return value
    return build_event_json(
        TraceEvent,
        id,
        event_data(
            TraceData,
            prompt=prompt,
            prompt_version=prompt_version,
            trace_id=trace_id,
            inputs=inputs,
            outputs=outputs,
            model=model,
            latency_ms=latency_ms,
        ),
        ms,
        source,
        max_event_bytes,
    )[1]
