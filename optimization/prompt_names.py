"""The MLflow prompts a policy optimizes: the policy's prompt itself, or one per DSPy predictor.

Importable without MLflow or DSPy: a policy with the `mlflow` backend is answered from the policy
alone; a `dspy` policy loads the user's program (which imports DSPy) to list its predictors.
"""

from __future__ import annotations

import re

from optimization.import_ref import load_ref
from schemas.config import PromptPolicy


def predictor_prompt(prompt: str, predictor: str) -> str:
    """`<prompt>_<predictor>`, with characters MLflow prompt names refuse replaced by `_`."""
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", f"{prompt}_{predictor}")


def prompt_names(policy: PromptPolicy) -> list[str]:
    """The MLflow prompts a policy optimizes: the prompt itself, or one per DSPy predictor."""
    if policy.backend != "dspy" or policy.program is None:
        return [policy.name]
    program = load_ref(policy.program, "program")()
    return [predictor_prompt(policy.name, name) for name, _ in program.named_predictors()]
