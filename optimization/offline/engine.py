"""A dspy custom engine serving the offline (demo/test) models without any network.

It reads DSPy's chat/JSON adapter requests (instructions, input fields, output
fields), GEPA's reflection prompt, MLflow's judge prompts or a plain prompt, answers
with the named offline model, and can sleep a fixed latency per call so benchmarks
can simulate a real provider. The fake provider serves the same answers over HTTP.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

from dspy.lm15 import Message, Request, Response, TextPart, Usage, response_to_events

from optimization.model_calls import meter_offline_call
from optimization.offline.judge import judge_prompt
from optimization.offline.reflector import parse_gepa_reflection_prompt, propose_instruction
from optimization.offline.rules import strip_rules
from optimization.offline.skills import SKILLS
from schemas.errors import GepaStreamError

REFLECTOR = "reflector"
UNCHANGED = "unchanged-reflector"
FAILING = "failing"
JUDGE = "judge"
REFLECTORS = (REFLECTOR, UNCHANGED, FAILING)
OFFLINE_MODELS: tuple[str, ...] = (*SKILLS, REFLECTOR, UNCHANGED, JUDGE, FAILING)
"""Names accepted after `offline/`: the task models, the reflector, `unchanged-reflector` (returns
the current instruction as it is: a null optimizer for tests), the judge (selects the offline
scorers of `optimization.scorers`), and `failing` (always errors)."""


def reflect(name: str, current_instruction: str, examples: list[dict[str, Any]], notes: int = 0) -> str:
    """The new instruction an offline reflection model proposes (`notes`: words of the note after
    each new rule, see `propose_instruction`)."""
    if name == FAILING:
        raise OfflineModelError("offline/failing: simulated provider outage")
    if name == UNCHANGED:
        return current_instruction
    return propose_instruction(current_instruction, examples, notes)


_FIELD_RE = re.compile(r"\[\[ ## (\w+) ## \]\]\n(.*?)(?=\n\[\[ ## \w+ ## \]\]|\Z)", re.DOTALL)
_OUTPUT_FIELDS_RE = re.compile(r"Your output fields are:\n(.*?)(?:\n\n|\nAll interactions|\Z)", re.DOTALL)
_OBJECTIVE_RE = re.compile(r"your objective is:\s*(.*)\Z", re.DOTALL | re.IGNORECASE)


class OfflineModelError(GepaStreamError, RuntimeError):
    """Raised by `offline/failing` to simulate a provider outage."""


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(getattr(part, "text", "") or "" for part in content)


def prompt_input(prompt: str) -> str:
    """The input part of a formatted plain prompt: the last line without rules, after its first ': '."""
    lines = [line for line in strip_rules(prompt).splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    return last.split(": ", 1)[1] if ": " in last else last


def respond_to_prompt(name: str, prompt: str) -> str:
    """Plain-text answer of offline model `name` to a formatted prompt (the template agent's call)."""
    if name == FAILING:
        raise OfflineModelError("offline/failing: simulated provider outage")
    if name not in SKILLS:
        raise ValueError(f"offline/{name} is not a task model (task models: {', '.join(SKILLS)})")
    return SKILLS[name].answer(prompt, prompt_input(prompt))


def respond_to_fields(
    name: str, instructions: str, inputs: dict[str, str], outputs: list[str], notes: int = 0
) -> dict[str, str]:
    """Answer of offline model `name` to a DSPy signature call: one value per output field."""
    if name in REFLECTORS:
        examples = _parse_examples(inputs.get("examples_with_feedback", "[]"))
        instruction = reflect(name, inputs.get("current_instruction", "").strip(), examples, notes)
        return {field: instruction for field in outputs}
    if name not in SKILLS:
        raise ValueError(f"offline/{name} is not a task model (task models: {', '.join(SKILLS)})")
    answer = SKILLS[name].answer(instructions, "\n".join(inputs.values()))
    return {
        field: ("Applied the rules in my instructions." if field == "reasoning" else answer)
        for field in outputs
    }


def chat_answer(name: str, system: str, user: str, conversation: str, json_mode: bool, notes: int = 0) -> str:
    """The text offline model `name` answers to a chat request (the engine's and the fake provider's
    shared behaviour): an MLflow judge verdict, a GEPA reflection in ``` blocks, a DSPy adapter
    answer (chat fields, or JSON in JSON mode), or a plain-prompt answer."""
    if name == FAILING:
        raise OfflineModelError("offline/failing: simulated provider outage")
    if name == JUDGE:
        return judge_prompt(conversation)
    output_fields = _OUTPUT_FIELDS_RE.search(system)
    if output_fields is None:
        gepa_prompt = parse_gepa_reflection_prompt(user) if name in REFLECTORS else None
        if gepa_prompt is not None:
            return f"```\n{reflect(name, *gepa_prompt, notes)}\n```"
        return respond_to_prompt(name, conversation)
    names = re.findall(r"\d+\. `(\w+)`", output_fields.group(1))
    objective = _OBJECTIVE_RE.search(system)
    fields = {key: value.split("\n\nRespond with")[0].strip() for key, value in _FIELD_RE.findall(user)}
    values = respond_to_fields(name, objective.group(1) if objective else "", fields, names, notes)
    return _render(values, as_json=json_mode or "JSON" in system)


def _parse_examples(text: str) -> list[dict[str, Any]]:
    try:
        examples, _ = json.JSONDecoder().raw_decode(text.strip())
    except json.JSONDecodeError:
        return [{"feedback": text}]
    return (
        [e if isinstance(e, dict) else {"feedback": e} for e in examples]
        if isinstance(examples, list)
        else []
    )


class OfflineEngine:
    """dspy engine (`dspy.LM(..., engine=OfflineEngine(name))`) for `offline/<name>`; demo/test only."""

    def __init__(self, name: str, latency_ms: float = 0.0, notes: int = 0) -> None:
        if name not in OFFLINE_MODELS:
            raise ValueError(
                f"model: unknown offline model 'offline/{name}' (known: {', '.join(OFFLINE_MODELS)})"
            )
        self.name = name
        self.latency_ms = latency_ms
        self.notes = notes

    def complete(self, request: Request) -> Response:
        """Answer one request, after the simulated latency."""
        if self.latency_ms:
            time.sleep(self.latency_ms / 1000)
        user = next((_text_of(m.text) for m in reversed(request.messages) if m.role == "user"), "")
        conversation = "\n".join(_text_of(m.text) for m in request.messages)
        json_mode = request.config.response_format is not None
        text = chat_answer(self.name, _text_of(request.system), user, conversation, json_mode, self.notes)
        if self.name in SKILLS:  # a task model's call (reflector and judge calls are not metered)
            meter_offline_call(f"offline/{self.name}", f"{_text_of(request.system)}\n{conversation}", text)
        return Response(
            id=None,
            model=f"offline/{self.name}",
            message=Message.assistant([TextPart(text)]),
            finish_reason="stop",
            usage=Usage(input_tokens=0, output_tokens=0, total_tokens=0),
        )

    def stream(self, request: Request) -> Iterator[Any]:
        """Stream the whole answer as one response's events."""
        return response_to_events(self.complete(request))

    def close(self) -> None:
        """Nothing to release."""

    def dump_state(self) -> dict[str, Any]:
        """State for saving a program that uses this engine."""
        return {"name": self.name, "latency_ms": self.latency_ms, "notes": self.notes}

    @classmethod
    def load_state(cls, state: dict[str, Any]) -> OfflineEngine:
        """Rebuild an engine saved with `dump_state`."""
        return cls(state["name"], state.get("latency_ms", 0.0), state.get("notes", 0))


def _render(values: dict[str, str], as_json: bool) -> str:
    if as_json:
        return json.dumps(values)
    body = "\n\n".join(f"[[ ## {field} ## ]]\n{value}" for field, value in values.items())
    return f"{body}\n\n[[ ## completed ## ]]"
