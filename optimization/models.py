"""Model strings: parse the accepted forms, build `dspy.LM`s, and call a model with a plain prompt.

Accepted: litellm strings (`openai/gpt-4.1-mini`), MLflow URIs
(`openai:/gpt-4.1-mini`), the guide's bare Databricks endpoint names
(`databricks-claude-sonnet-4`), and the built-in demo/test models
`offline/<name>[?latency_ms=N]` (and `offline/reflector?notes=N`: a verbose reflector whose
every new rule comes with an N-word note, so its prompts grow).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from urllib.parse import parse_qs

import dspy

from optimization.model_calls import ROLE_KEY, ModelRole, install, meter_offline_call
from optimization.offline import OFFLINE_MODELS, OfflineEngine, respond_to_prompt
from optimization.offline.engine import REFLECTOR

_PROVIDER_RE = re.compile(r"^(?P<provider>[A-Za-z0-9_.-]+)(?::/|/)(?P<model>\S+)$")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model string: `provider`/`model`, plus the simulated latency of offline models and
    the words of the offline reflector's note after each rule (`notes`)."""

    provider: str
    model: str
    latency_ms: float = 0.0
    notes: int = 0

    @property
    def is_offline(self) -> bool:
        """Whether this is a built-in deterministic demo/test model."""
        return self.provider == "offline"

    @property
    def litellm(self) -> str:
        """The litellm model string (`provider/model`)."""
        return f"{self.provider}/{self.model}"

    @property
    def mlflow_uri(self) -> str:
        """The MLflow model URI (`provider:/model`) used by MLflow judges and optimizers."""
        return f"{self.provider}:/{self.model}"


def parse_model(model: str, argument: str = "model") -> ModelSpec:
    """Parse `model`; a malformed string or unknown offline model raises ValueError naming `argument`."""
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"{argument}: expected a model string such as 'openai/gpt-4.1-mini', got {model!r}")
    text = model.strip()
    if re.fullmatch(r"databricks-[\w.-]+", text):
        return ModelSpec("databricks", text)
    text, _, query = text.partition("?")
    match = _PROVIDER_RE.match(text)
    if match is None:
        raise ValueError(
            f"{argument}: malformed model string {model!r}; use 'provider/model' (litellm), 'provider:/model' "
            "(MLflow), a 'databricks-...' endpoint name, or 'offline/<name>'"
        )
    provider, name = match["provider"], match["model"]
    if provider != "offline":
        if query:
            raise ValueError(
                f"{argument}: options after '?' are only supported for offline models ({model!r})"
            )
        return ModelSpec(provider, name)
    if name not in OFFLINE_MODELS:
        raise ValueError(f"{argument}: unknown offline model {model!r} (known: {', '.join(OFFLINE_MODELS)})")
    options = parse_qs(query, strict_parsing=False) if query else {}
    unknown = set(options) - {"latency_ms", "notes"}
    if unknown:
        raise ValueError(
            f"{argument}: unknown option(s) {sorted(unknown)} in {model!r} (known: latency_ms, notes)"
        )
    try:
        latency = float(options.get("latency_ms", ["0"])[0])
    except ValueError:
        raise ValueError(f"{argument}: latency_ms must be a number in {model!r}") from None
    if latency < 0:
        raise ValueError(f"{argument}: latency_ms must be >= 0 in {model!r}")
    notes = options.get("notes", ["0"])[0]
    if not notes.isdigit():
        raise ValueError(f"{argument}: notes must be a whole number of words >= 0 in {model!r}")
    if int(notes) and name != REFLECTOR:
        raise ValueError(f"{argument}: notes is an option of offline/{REFLECTOR} only ({model!r})")
    return ModelSpec("offline", name, latency, int(notes))


def make_lm(
    model: str | ModelSpec, latency_ms: float | None = None, *, role: ModelRole = "task", **lm_kwargs: object
) -> dspy.LM:
    """A `dspy.LM` for a litellm string or an offline demo/test model (`latency_ms` overrides the string's).

    Real models use dspy's litellm engine, tagged with `role`, so their calls follow the
    model-call policy (timeout, retries, accounting: `optimization.model_calls`) instead of
    dspy's own retries.
    """
    spec = model if isinstance(model, ModelSpec) else parse_model(model)
    if not spec.is_offline:
        install()
        options: dict[str, object] = {"engine": "litellm", "num_retries": 0, **lm_kwargs}
        options["metadata"] = {**dict(lm_kwargs.get("metadata") or {}), ROLE_KEY: role}  # type: ignore[call-overload]
        return dspy.LM(spec.litellm, **options)
    delay = spec.latency_ms if latency_ms is None else latency_ms
    return dspy.LM(spec.litellm, engine=OfflineEngine(spec.model, delay, spec.notes), cache=False)


def complete_text(model: str | ModelSpec, prompt: str, latency_ms: float | None = None) -> str:
    """Send `prompt` as one user message to the task model `model` and return the text of its answer."""
    spec = model if isinstance(model, ModelSpec) else parse_model(model)
    if spec.is_offline:
        delay = spec.latency_ms if latency_ms is None else latency_ms
        if delay:
            time.sleep(delay / 1000)
        answer = respond_to_prompt(spec.model, prompt)
        meter_offline_call(spec.litellm, prompt, answer)
        return answer
    import litellm

    install()
    response = litellm.completion(
        model=spec.litellm, messages=[{"role": "user", "content": prompt}], metadata={ROLE_KEY: "task"}
    )
    return response["choices"][0]["message"]["content"] or ""
