"""SME rating scales and their normalisation to [0, 1].

One table for every component that reads ratings (the stream's join, the
SME-rating metric, the optimizer library), so a label means the same thing
everywhere.
"""

from __future__ import annotations

import math
from typing import Literal

RatingScale = Literal["five_point", "unit"]

RATING_LABELS: dict[str, float] = {
    "excellent": 1.0,
    "good": 0.75,
    "fair": 0.5,
    "poor": 0.0,
    "up": 1.0,
    "down": 0.0,
}

SCALE_BOUNDS: dict[str, tuple[float, float]] = {"five_point": (1.0, 5.0), "unit": (0.0, 1.0)}


def normalize_rating(rating: str | float | int, scale: RatingScale = "five_point") -> float:
    """Map a label (any case) or a number on `scale` to [0, 1].

    Raises ValueError naming the problem for an unknown label, a number outside
    its scale, or a non-finite number.
    """
    if isinstance(rating, bool):
        raise ValueError("rating must be a label or a number, not a boolean")
    if isinstance(rating, str):
        label = rating.strip().lower()
        if label not in RATING_LABELS:
            known = ", ".join(RATING_LABELS)
            raise ValueError(f"unknown rating label {rating!r} (known: {known})")
        return RATING_LABELS[label]
    if scale not in SCALE_BOUNDS:
        raise ValueError(f"unknown rating scale {scale!r} (known: {', '.join(SCALE_BOUNDS)})")
    value = float(rating)
    low, high = SCALE_BOUNDS[scale]
    if not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"rating {rating!r} is outside the {scale} scale [{low:g}, {high:g}]")
    return (value - low) / (high - low)
