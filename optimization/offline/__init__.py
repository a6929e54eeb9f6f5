"""Built-in deterministic models for demos, examples, tests and benchmarks — not real LLMs.

`offline/support-router`, `offline/math`, `offline/support-agent` follow the
rules stated in their instructions; `offline/reflector` writes the rule GEPA's
feedback asks for; `offline/failing` always errors. No network is used.
"""

from optimization.offline.engine import OFFLINE_MODELS, OfflineEngine, OfflineModelError, respond_to_prompt
from optimization.offline.reflector import propose_instruction
from optimization.offline.rules import format_expected, format_rule, parse_expected, parse_rules

__all__ = [
    "OFFLINE_MODELS",
    "OfflineEngine",
    "OfflineModelError",
    "format_expected",
    "format_rule",
    "parse_expected",
    "parse_rules",
    "propose_instruction",
    "respond_to_prompt",
]
