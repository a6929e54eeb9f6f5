"""Data shapes: validation of `{"inputs", "expectations"}` records, DSPy examples, deterministic splits."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, TypeVar

import dspy

T = TypeVar("T")

VAL_FRACTION = 0.3
"""Share of the data held out when the caller gives no validation set."""


def canonical_key(value: Any) -> str:
    """A stable text key for a JSON-like value (dict order does not matter)."""
    return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)


def _stable_hash(item: Any) -> str:
    payload = item.toDict() if isinstance(item, dspy.Example) else item
    return hashlib.sha256(canonical_key(payload).encode()).hexdigest()


def split_holdout(
    items: Sequence[T], val_fraction: float = VAL_FRACTION, argument: str = "trainset"
) -> tuple[list[T], list[T]]:
    """Deterministic train/held-out split by content hash (same data -> same split); both parts non-empty."""
    if len(items) < 2:
        raise ValueError(f"{argument}: need at least 2 examples to hold some out, got {len(items)}")
    ordered = sorted(items, key=_stable_hash)
    n_val = min(len(items) - 1, max(1, round(len(items) * val_fraction)))
    return ordered[n_val:], ordered[:n_val]


def validate_records(
    records: Sequence[dict[str, Any]], argument: str, input_keys: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Check `{"inputs": {...}, "expectations"?: {...}, "outputs"?: ...}` records; ValueError names `argument`."""
    if not records:
        raise ValueError(f"{argument}: no examples given")
    checked = []
    for index, record in enumerate(records):
        if not isinstance(record, dict) or not isinstance(record.get("inputs"), dict) or not record["inputs"]:
            raise ValueError(
                f"{argument}[{index}]: expected a dict with a non-empty 'inputs' dict, got {record!r:.200}"
            )
        missing = [key for key in input_keys if key not in record["inputs"]]
        if missing:
            raise ValueError(f"{argument}[{index}]: inputs lack the key(s) {missing}")
        if "expectations" in record and not isinstance(record["expectations"], dict):
            raise ValueError(f"{argument}[{index}]: 'expectations' must be a dict")
        checked.append(record)
    return checked


def convert_to_dspy_examples(
    data: Sequence[dict[str, Any]], input_keys: Sequence[str], output_key: str
) -> list[dspy.Example]:
    """Flat dicts (or `{"inputs", "expectations"}` records) -> `dspy.Example`s with `input_keys` as inputs.

    For records, `output_key` is read from the expectations (or its `expected_response`).
    """
    if not data:
        raise ValueError("data: no examples given")
    if not input_keys:
        raise ValueError("input_keys: name at least one input field")
    examples = []
    for index, item in enumerate(data):
        if isinstance(item, dict) and isinstance(item.get("inputs"), dict):
            expectations = item.get("expectations") or {}
            label = expectations.get(output_key, expectations.get("expected_response", item.get("outputs")))
            flat = {**item["inputs"], **({output_key: label} if label is not None else {})}
        elif isinstance(item, dict):
            flat = dict(item)
        else:
            raise ValueError(f"data[{index}]: expected a dict, got {type(item).__name__}")
        missing = [key for key in input_keys if key not in flat]
        if missing:
            raise ValueError(f"input_keys: data[{index}] lacks {missing}")
        if output_key not in flat:
            raise ValueError(f"output_key: data[{index}] lacks {output_key!r}")
        examples.append(dspy.Example(**flat).with_inputs(*input_keys))
    return examples
