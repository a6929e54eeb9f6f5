"""What users type: the reflection-model alias and the check of options passed through to GEPA.

`reflection_model=` (MLflow's name) and `reflection_lm=` (dspy's and gepa's) name the same
setting. Options the optimizer classes pass on to `dspy.GEPA` / `gepa.optimize` are checked
up front, so a typo or a setting the library owns is a `TypeError` naming the keyword, not
an error from deep inside GEPA (or a value silently replaced).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def one_reflection_model(owner: str, reflection_model: T | None, reflection_lm: T | None) -> T | None:
    """The reflection model given as `reflection_model=` or its alias `reflection_lm=`; TypeError if both."""
    if reflection_model is not None and reflection_lm is not None:
        raise TypeError(
            f"{owner}() got both reflection_model= and reflection_lm= (two names for one setting: give one)"
        )
    return reflection_model if reflection_model is not None else reflection_lm


def check_pass_through(
    owner: str, options: Mapping[str, Any], target: Callable[..., Any], owned: Mapping[str, str]
) -> None:
    """TypeError for an option `target` does not take, or one the library sets itself (`owned`: name -> what to use)."""
    accepted = set(inspect.signature(target).parameters) - {"self"}
    target_name = getattr(target, "__qualname__", str(target)).removesuffix(".__init__")
    for name in options:
        if name in owned:
            raise TypeError(
                f"{owner}() got keyword argument {name!r}, which gepa-stream sets itself: {owned[name]}"
            )
        if name not in accepted:
            known = ", ".join(sorted(accepted - set(owned)))
            raise TypeError(
                f"{owner}() got an unexpected keyword argument {name!r} (options passed on to {target_name}: {known})"
            )
