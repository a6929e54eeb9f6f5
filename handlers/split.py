"""Deterministic train / validation / held-out split by the hash of `trace_id`.

The same example lands in the same part in every run and on every machine, so a
resumed or re-run job sees the data it saw before, and held-out examples never
leak into GEPA's training or selection.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from schemas.events import Example


@dataclass(frozen=True, slots=True)
class Split:
    train: list[Example]
    val: list[Example]
    heldout: list[Example]


def _unit(trace_id: str, salt: str) -> float:
    digest = hashlib.sha256(f"{salt}:{trace_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_examples(examples: list[Example], holdout_fraction: float, val_fraction: float = 0.3) -> Split:
    """`holdout_fraction` of the examples for the promotion gate; of the rest, `val_fraction`
    for GEPA's candidate selection and the remainder for its reflection (train).

    Each part keeps at least one example when there are three or more.
    """
    heldout = [e for e in examples if _unit(e.trace_id, "heldout") < holdout_fraction]
    rest = [e for e in examples if _unit(e.trace_id, "heldout") >= holdout_fraction]
    val = [e for e in rest if _unit(e.trace_id, "val") < val_fraction]
    train = [e for e in rest if _unit(e.trace_id, "val") >= val_fraction]
    if len(examples) >= 3:
        train, val, heldout = _non_empty(train, val, heldout)
    return Split(train, val, heldout)


def _non_empty(
    train: list[Example], val: list[Example], heldout: list[Example]
) -> tuple[list[Example], list[Example], list[Example]]:
    """Move one example from the largest part into any empty one (tiny windows)."""
    parts = [train, val, heldout]
    for part in parts:
        if not part:
            donor = max(parts, key=len)
            part.append(donor.pop())
    return train, val, heldout
