"""The per-prompt policy file (YAML): which prompts the daemon manages and how.

Loaded and validated before anything else starts, so a typo is a clear error at
start-up, not a surprise at the first trigger.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PositiveInt,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from schemas.durations import Duration
from schemas.errors import GepaStreamError
from schemas.events import PromptName

ModuleRef = Annotated[
    str, Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", description="`package.module:function`")
]


class _Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WindowPolicy(_Policy):
    """The rolling window of labeled examples kept per prompt."""

    max_examples: PositiveInt = 500
    max_age: Duration = timedelta(days=7)
    join_ttl: Duration = Field(
        default=timedelta(hours=1), description="how long a trace waits for its rating"
    )


class TriggerPolicy(_Policy):
    """When an optimization fires (docs/architecture.md, step 3)."""

    min_examples: PositiveInt = 50
    min_new_examples: Annotated[int, Field(ge=0)] = 20
    cooldown: Duration = timedelta(minutes=10)
    score_drop: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    max_interval: Duration | None = None


class BudgetPolicy(_Policy):
    """What one job may spend, and how often it is tried before it ends `failed`."""

    max_metric_calls: PositiveInt = 150
    max_wall_time: Duration = timedelta(minutes=30)
    num_threads: PositiveInt = 4
    max_attempts: Annotated[int, Field(ge=1, le=20)] = Field(
        default=3,
        description="job process starts per request: a process that dies without a result, or a job failed by an MLflow outage, is resumed until this many",
    )
    max_outage_wait: Duration = Field(
        default=timedelta(hours=1),
        description="how long a job failed by an MLflow outage waits for MLflow to answer again before it ends `failed`",
    )

    @field_validator("max_outage_wait")
    @classmethod
    def _positive_wait(cls, value: timedelta) -> timedelta:
        if value.total_seconds() <= 0:
            raise ValueError("must be longer than 0s")
        return value

    max_cost_usd: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = Field(
        default=None,
        description="stop GEPA once its model calls cost this much (estimated USD); the best candidate so far is still gated",
    )


class ModelPrice(_Policy):
    """USD per million tokens, for a model litellm's bundled cost map lacks (or to override it)."""

    input_per_million: Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
    output_per_million: Annotated[float, Field(ge=0.0, allow_inf_nan=False)]


class ModelCallsPolicy(_Policy):
    """How every model call of a job (task, reflection, judge) is made."""

    timeout: Duration = Field(default=timedelta(seconds=60), description="per request (attempt)")
    max_retries: Annotated[int, Field(ge=0, le=20)] = Field(
        default=4, description="retries of a 429, 5xx, timeout or connection error"
    )
    max_backoff: Duration = Field(
        default=timedelta(seconds=30), description="longest wait between retries without Retry-After"
    )
    prices: dict[str, ModelPrice] = Field(
        default_factory=dict, description="model string (provider/model or provider:/model) -> price"
    )

    @field_validator("timeout", "max_backoff")
    @classmethod
    def _at_least_a_second(cls, value: timedelta) -> timedelta:
        if value.total_seconds() < 1:
            raise ValueError("must be at least 1s")
        return value

    @field_validator("prices")
    @classmethod
    def _litellm_names(cls, prices: dict[str, ModelPrice]) -> dict[str, ModelPrice]:
        """Keys as litellm names the calls (`openai:/gpt-4.1` -> `openai/gpt-4.1`)."""
        named = {}
        for model, price in prices.items():
            provider, separator, name = model.partition(":/") if ":/" in model else model.partition("/")
            if not (provider and separator and name):
                raise ValueError(f"{model!r}: expected a model string such as 'openai/gpt-4.1-mini'")
            named[f"{provider}/{name}"] = price
        return named


class MaxWatch(_Policy):
    """How long a guard watches at most: whichever comes first."""

    examples: PositiveInt = 2000
    duration: Duration = timedelta(days=7)


class GuardPolicy(_Policy):
    """The live guard after a promotion (handlers/guard.py): compares the new version's live
    ratings with the replaced version's, anytime-valid at `confidence`."""

    enabled: bool = True
    min_live_examples: PositiveInt = 50
    margin: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.05
    confidence: Annotated[float, Field(gt=0.5, lt=1.0)] = 0.95
    max_watch: MaxWatch = MaxWatch()

    @model_validator(mode="after")
    def _watch_covers_minimum(self) -> GuardPolicy:
        if self.max_watch.examples < self.min_live_examples:
            raise ValueError(
                f"max_watch.examples ({self.max_watch.examples}) is below min_live_examples "
                f"({self.min_live_examples}): the guard could never confirm"
            )
        return self


class SegmentPolicy(_Policy):
    """The gate's segment rule (optimization/comparison.py): no segment of the held-out examples
    may be worse beyond doubt. `by` names the label: a trace attribute or an input field."""

    by: Annotated[str, Field(pattern=r"^(attributes|inputs)\.[^.\s]+$")] = Field(
        description="`attributes.<key>` (the trace's attributes) or `inputs.<key>`"
    )
    min_examples: Annotated[int, Field(ge=2)] = 10
    max_segments: PositiveInt = 20


class RolloutPolicy(_Policy):
    """A staged rollout (canary) instead of a cutover: a promoted candidate serves `stages` of the
    traffic in turn, compared with production on ratings of the same period (handlers/rollout.py).
    Off by default: it needs a deployer that routes by the `canary` alias (optimization/routing.py)."""

    enabled: bool = False
    stages: Annotated[list[Annotated[float, Field(gt=0.0, lt=1.0)]], Field(min_length=1)] = [0.05, 0.25, 0.5]
    min_live_examples: PositiveInt = 50
    margin: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.05
    confidence: Annotated[float, Field(gt=0.5, lt=1.0)] = 0.95
    max_stage_duration: Duration = timedelta(days=2)

    @field_validator("stages")
    @classmethod
    def _increasing(cls, stages: list[float]) -> list[float]:
        if any(later <= earlier for earlier, later in zip(stages, stages[1:], strict=False)):
            raise ValueError(f"stages must increase strictly: {stages}")
        return stages


class PromotionPolicy(_Policy):
    """The statistical gate between a candidate and the `production` alias, and the live
    guard after it."""

    mode: Literal["auto", "manual"] = "auto"
    min_improvement: Annotated[float, Field(ge=0.0)] = 0.05
    confidence: Annotated[float, Field(gt=0.5, lt=1.0)] = 0.95
    min_eval_examples: PositiveInt = 20
    holdout_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.3
    guard: GuardPolicy = GuardPolicy()
    rollout: RolloutPolicy = RolloutPolicy()
    segments: SegmentPolicy | None = None
    max_template_tokens: PositiveInt | None = Field(
        default=None,
        description="a candidate whose template is longer (in tokens) is not chosen nor promoted",
    )
    max_cost_increase: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = Field(
        default=None,
        description="relative increase of the cost per call over the baseline's (0.5 = +50 %) beyond which "
        "a candidate is rejected: USD per call when the baseline's is known and > 0, else tokens per call",
    )
    remove_repeated_rules: bool = Field(
        default=True,
        description="drop the instruction lines a candidate repeats (optimization/rule_dedup.py) before it is evaluated",
    )


class OtelPolicy(_Policy):
    """Which OpenTelemetry span attributes name this prompt, its version and its template variables
    (`gepa-stream bridge otel`); unset ones keep the convention preset's (see README)."""

    prompt_attribute: str | None = Field(
        default=None,
        min_length=1,
        description="the attribute whose value names this prompt (`name`, `name/3`); `key#field` reads a field of a JSON attribute",
    )
    version_attribute: str | None = Field(default=None, min_length=1)
    variables_attribute: str | None = Field(
        default=None, min_length=1, description="a JSON object of the template variables (-> inputs)"
    )


class PromptPolicy(_Policy):
    name: PromptName
    backend: Literal["mlflow", "dspy"] = "mlflow"
    program: ModuleRef | None = None
    predict_fn: ModuleRef | None = None
    task_model: str = "offline/support-router"
    reflection_model: str = "offline/reflector"
    judge_model: str | None = Field(
        default=None, description="LLM judge for correctness/guidelines; default: reflection_model"
    )
    output_field: str | None = Field(
        default=None, description="dspy: the output field compared with expected_response"
    )
    input_keys: Annotated[list[str], Field(min_length=1)] = ["query"]
    scorers: Annotated[list[str], Field(min_length=1)] = ["exact_match"]
    window: WindowPolicy = WindowPolicy()
    triggers: TriggerPolicy = TriggerPolicy()
    budget: BudgetPolicy = BudgetPolicy()
    model_calls: ModelCallsPolicy = ModelCallsPolicy()
    promotion: PromotionPolicy = PromotionPolicy()
    otel: OtelPolicy | None = None

    @model_validator(mode="after")
    def _backend_needs(self) -> PromptPolicy:
        if self.backend == "dspy" and self.program is None:
            raise ValueError("backend 'dspy' needs `program: package.module:factory`")
        if self.backend == "dspy" and self.promotion.rollout.enabled:
            raise ValueError(
                "promotion.rollout needs the mlflow backend: a staged rollout routes one template "
                "per prompt, and a dspy program has one prompt per predictor"
            )
        if self.triggers.min_examples > self.window.max_examples:
            raise ValueError(
                f"triggers.min_examples ({self.triggers.min_examples}) exceeds "
                f"window.max_examples ({self.window.max_examples}): the trigger could never fire"
            )
        return self


PATTERN_CHARS = re.compile(r"^[A-Za-z0-9_.\-*?]{1,255}$")


class PromptPattern(BaseModel):
    """`patterns:` entry: the settings of every prompt whose name matches the glob `match`
    (`*` any run of characters, `?` one; case-sensitive), unless the prompt is listed by name."""

    model_config = ConfigDict(extra="allow")

    match: Annotated[str, Field(pattern=PATTERN_CHARS.pattern)]

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def sample(self) -> str:
        """A name the glob matches (to validate its settings at load)."""
        return self.match.replace("*", "x").replace("?", "x")


def globs_overlap(a: str, b: str) -> bool:
    """True when some name matches both globs (`*` and `?` only): a walk over both patterns at
    once, where a `*` either ends or eats one character the other side produces."""

    @functools.cache
    def common(i: int, j: int) -> bool:
        if i == len(a) and j == len(b):
            return True
        if i < len(a) and a[i] == "*":
            return common(i + 1, j) or (j < len(b) and common(i, j + 1))
        if j < len(b) and b[j] == "*":
            return common(i, j + 1) or (i < len(a) and common(i + 1, j))
        if i < len(a) and j < len(b) and (a[i] == b[j] or "?" in (a[i], b[j])):
            return common(i + 1, j + 1)
        return False

    return common(0, 0)


def deep_merge(*layers: dict[str, Any]) -> dict[str, Any]:
    """Later layers win; nested mappings merge key by key, anything else is replaced."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = deep_merge(merged[key], value)
            else:
                merged[key] = value
    return merged


class PolicyFile(_Policy):
    """The whole YAML file: `defaults` every prompt inherits, `prompts` listed by name, and
    `patterns` for prompts matched by name. Precedence: an explicit name beats a pattern beats
    defaults beats the built-in default; two patterns some name could match both are refused."""

    defaults: dict[str, Any] = Field(default_factory=dict)
    prompts: list[PromptPolicy] = Field(default_factory=list)
    patterns: list[PromptPattern] = Field(default_factory=list)

    _own: dict[str, dict[str, Any]] = PrivateAttr(default_factory=dict)  # listed prompts' own settings

    @model_validator(mode="wrap")
    @classmethod
    def _inherit_defaults(cls, raw: Any, handler: ModelWrapValidatorHandler[PolicyFile]) -> PolicyFile:
        """Each listed prompt's settings over the defaults (validated as one prompt policy); what
        each set itself is kept for `explain`."""
        if not isinstance(raw, dict):
            return handler(raw)
        defaults, prompts = raw.get("defaults") or {}, raw.get("prompts")
        if isinstance(defaults, dict) and "name" in defaults:
            raise ValueError("defaults: `name` is not a default (each prompt has its own)")
        own = {}
        if isinstance(defaults, dict) and defaults and isinstance(prompts, list):
            own = {p["name"]: p for p in prompts if isinstance(p, dict) and isinstance(p.get("name"), str)}
            raw = {**raw, "prompts": [deep_merge(defaults, p) if isinstance(p, dict) else p for p in prompts]}
        policy = handler(raw)
        policy._own = own or {p.name: p.model_dump(exclude_unset=True) for p in policy.prompts}
        return policy

    @model_validator(mode="after")
    def _unique_names(self) -> PolicyFile:
        names = [p.name for p in self.prompts]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"prompt names must be unique, repeated: {', '.join(duplicated)}")
        for i, pattern in enumerate(self.patterns):
            for other in self.patterns[i + 1 :]:
                if globs_overlap(pattern.match, other.match):
                    raise ValueError(
                        f"patterns {pattern.match!r} and {other.match!r} can both match one name: "
                        "list that prompt by name, or make the patterns disjoint"
                    )
            try:
                PromptPolicy.model_validate(
                    deep_merge(self.defaults, pattern.settings, {"name": pattern.sample()})
                )
            except ValidationError as exc:
                raise ValueError(
                    f"patterns[{i}] ({pattern.match}): {_describe(exc, pattern.settings)}"
                ) from None
        if self.defaults and not self.prompts and not self.patterns:
            try:
                PromptPolicy.model_validate(deep_merge(self.defaults, {"name": "defaults"}))
            except ValidationError as exc:
                raise ValueError(f"defaults: {_describe(exc, self.defaults)}") from None
        return self

    def pattern_for(self, name: str) -> PromptPattern | None:
        return next((p for p in self.patterns if fnmatch.fnmatchcase(name, p.match)), None)

    def prompt(self, name: str) -> PromptPolicy | None:
        """The effective policy of `name`: listed, else matched by a pattern, else None."""
        listed = next((p for p in self.prompts if p.name == name), None)
        if listed is not None:
            return listed
        pattern = self.pattern_for(name)
        if pattern is None:
            return None
        try:
            return PromptPolicy.model_validate(deep_merge(self.defaults, pattern.settings, {"name": name}))
        except ValidationError:
            return None  # not a valid prompt name (the pattern's settings were checked at load)

    def explain(self, name: str) -> tuple[PromptPolicy, dict[str, str]] | None:
        """The effective policy of `name` and, per setting (dotted path), where it came from:
        `prompts (name)`, `patterns (glob)`, `defaults`, or `built-in`."""
        policy = self.prompt(name)
        if policy is None:
            return None
        pattern = None if any(p.name == name for p in self.prompts) else self.pattern_for(name)
        listed = self._own.get(name, {})
        layers = [
            (f"prompts ({name})", listed),
            (f"patterns ({pattern.match})" if pattern else "", pattern.settings if pattern else {}),
            ("defaults", self.defaults),
        ]
        sources = {"name": layers[0][0] if pattern is None else layers[1][0]}
        for path in list(leaves(policy.model_dump(mode="json")))[1:]:
            sources[path] = next(
                (label for label, layer in layers if label and _has_path(layer, path)), "built-in"
            )
        return policy, sources


class PolicyBook(Mapping[str, PromptPolicy]):
    """The prompts a process manages, by name: the listed ones, and each pattern-matched one from
    the first time its name is asked for (then kept, so a prompt resolves once). Iterating gives
    the listed and the matched-so-far; `in` and lookups resolve any name."""

    def __init__(self, policies: PolicyFile) -> None:
        self.replace(policies)

    def replace(self, policies: PolicyFile) -> None:
        """A reloaded policy file: every holder of this book reads it from now on."""
        self.file = policies
        self._known = {p.name: p for p in policies.prompts}

    def __getitem__(self, name: str) -> PromptPolicy:
        policy = self._known.get(name)
        if policy is None and self.file.patterns:
            policy = self.file.prompt(name)
            if policy is not None:
                self._known[name] = policy
        if policy is None:
            raise KeyError(name)
        return policy

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._known))

    def __len__(self) -> int:
        return len(self._known)


def leaves(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The leaves of a nested mapping by dotted path (`triggers.cooldown`), in order."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(leaves(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _has_path(tree: dict[str, Any], path: str) -> bool:
    node: Any = tree
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


class ConfigError(GepaStreamError, ValueError):
    """An unusable config file; the message names the file, the field and the problem."""


def load_policy_file(path: Path) -> PolicyFile:
    """Read and validate the YAML policy file, or raise ConfigError."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror or exc})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    try:
        return PolicyFile.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc, raw)}") from None


def _describe(exc: ValidationError, raw: object) -> str:
    lines = []
    for error in exc.errors(include_url=False):
        loc = _location(error["loc"], raw)
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "is not a known setting"
        elif error["type"] == "missing":
            message = "is required"
        lines.append(f"{loc}: {message}" if loc else message)
    return "; ".join(lines)


def _location(loc: tuple[int | str, ...], raw: object) -> str:
    """`('prompts', 0, 'triggers', 'cooldown')` -> `prompts[0] (support_router).triggers.cooldown`."""
    out = ""
    node = raw
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("name"), str):
                out += f" ({node['name']})"
        else:
            if "[" in part or part in {"function-after", "function-before"}:
                continue
            out += f".{part}" if out else part
            node = node.get(part) if isinstance(node, dict) else None
    return out
