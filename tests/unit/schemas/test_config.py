"""Settings (env vars) and the per-prompt policy file."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from daemon.cli import app
from daemon.settings import load_config, load_settings
from schemas.config import ConfigError, load_policy_file
from schemas.durations import format_duration, parse_duration

ARCHITECTURE_EXAMPLE = """
prompts:
  - name: support_router
    backend: mlflow
    task_model: offline/support-router
    reflection_model: offline/reflector
    input_keys: [ticket]
    scorers: [exact_match]
    window: {max_examples: 500, max_age: 7d}
    triggers: {min_examples: 50, min_new_examples: 20, cooldown: 10m, score_drop: 0.10}
    budget: {max_metric_calls: 150, max_wall_time: 30m}
    promotion: {mode: auto, min_improvement: 0.05, confidence: 0.95, min_eval_examples: 20}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gepa-stream.yaml"
    path.write_text(text)
    return path


def test_the_architecture_example_loads(tmp_path: Path) -> None:
    policies = load_policy_file(_write(tmp_path, ARCHITECTURE_EXAMPLE))
    policy = policies.prompt("support_router")
    assert policy is not None
    assert policy.window.max_age == timedelta(days=7)
    assert policy.triggers.cooldown == timedelta(minutes=10)
    assert policy.budget.max_wall_time == timedelta(minutes=30)
    assert (policy.budget.max_attempts, policy.budget.max_outage_wait) == (3, timedelta(hours=1))
    assert policy.promotion.confidence == 0.95
    assert (policy.model_calls.timeout, policy.model_calls.max_retries, policy.budget.max_cost_usd) == (
        timedelta(seconds=60),
        4,
        None,
    )
    assert policies.prompt("other") is None


def test_model_prices_are_keyed_by_litellm_names(tmp_path: Path) -> None:
    text = "prompts: [{name: a, model_calls: {prices: {'openai:/m': {input_per_million: 1, output_per_million: 2}}}}]"
    policy = load_policy_file(_write(tmp_path, text)).prompts[0]
    assert list(policy.model_calls.prices) == ["openai/m"]


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (
            "prompts: [{name: a, triggers: {cooldown: soon}}]",
            ["prompts[0] (a).triggers.cooldown", "invalid duration 'soon'"],
        ),
        ("prompts: [{name: a, windw: {}}]", ["prompts[0] (a).windw", "not a known setting"]),
        ("prompts: [{name: 'a b'}]", ["prompts[0] (a b).name"]),
        ("prompts: [{name: a}, {name: a}]", ["prompt names must be unique, repeated: a"]),
        ("prompts: [{name: a, backend: dspy}]", ["prompts[0] (a)", "needs `program"]),
        ("prompts: [{name: a, promotion: {mode: yolo}}]", ["prompts[0] (a).promotion.mode"]),
        ("prompts: [{name: a, window: {max_examples: 10}}]", ["min_examples (50) exceeds"]),
        (
            "prompts: [{name: a, budget: {max_attempts: 0}}]",
            ["prompts[0] (a).budget.max_attempts", "greater than or equal to 1"],
        ),
        (
            "prompts: [{name: a, budget: {max_attempts: 21}}]",
            ["prompts[0] (a).budget.max_attempts", "less than or equal to 20"],
        ),
        (
            "prompts: [{name: a, budget: {max_outage_wait: 0s}}]",
            ["prompts[0] (a).budget.max_outage_wait", "must be longer than 0s"],
        ),
        (
            "prompts: [{name: a, model_calls: {timeout: 0s}}]",
            ["prompts[0] (a).model_calls.timeout", "must be at least 1s"],
        ),
        (
            "prompts: [{name: a, model_calls: {max_retries: -1}}]",
            ["prompts[0] (a).model_calls.max_retries", "greater than or equal to 0"],
        ),
        (
            "prompts: [{name: a, model_calls: {prices: {gpt4: {input_per_million: 1, output_per_million: 2}}}}]",
            ["prompts[0] (a).model_calls.prices", "'gpt4'"],
        ),
        (
            "prompts: [{name: a, model_calls: {prices: {openai/x: {input_per_million: 1}}}}]",
            ["output_per_million", "is required"],
        ),
        (
            "prompts: [{name: a, budget: {max_cost_usd: 0}}]",
            ["prompts[0] (a).budget.max_cost_usd", "greater than 0"],
        ),
        (
            "prompts: [{name: a, promotion: {guard: {margin: 1.5}}}]",
            ["prompts[0] (a).promotion.guard.margin", "less than 1"],
        ),
        (
            "prompts: [{name: a, promotion: {guard: {confidence: 1}}}]",
            ["prompts[0] (a).promotion.guard.confidence"],
        ),
        (
            "prompts: [{name: a, promotion: {guard: {max_watch: {duration: soon}}}}]",
            ["promotion.guard.max_watch.duration", "invalid duration"],
        ),
        (
            "prompts: [{name: a, promotion: {guard: {max_watch: {examples: 10}}}}]",
            ["promotion.guard", "max_watch.examples (10) is below min_live_examples (50)"],
        ),
        (
            "prompts: [{name: a, promotion: {guard: {enable: true}}}]",
            ["prompts[0] (a).promotion.guard.enable", "not a known setting"],
        ),
        ("prompts: [{name: a}\n", ["not valid YAML at line"]),
        ("prompts: 3", ["prompts:"]),
    ],
)
def test_bad_policy_files_name_file_field_and_problem(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_policy_file(path)
    message = str(caught.value)
    assert message.startswith(str(path))
    for fragment in fragments:
        assert fragment in message


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_policy_file(tmp_path / "absent.yaml")


def test_durations() -> None:
    assert parse_duration("250ms") == timedelta(milliseconds=250)
    assert parse_duration("1.5h") == timedelta(minutes=90)
    assert parse_duration(30) == timedelta(seconds=30)
    assert format_duration(timedelta(minutes=10)) == "10m"
    assert format_duration(timedelta(seconds=1.5)) == "1.5s"
    with pytest.raises(ValueError, match="use e.g."):
        parse_duration("-5m")


def test_settings_from_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GEPA_STREAM_BOOTSTRAP_SERVERS", "kafka:29092")
    monkeypatch.setenv("GEPA_STREAM_TOPIC_PREFIX", "acme.")
    monkeypatch.setenv("GEPA_STREAM_WEB_PORT", "7000")
    monkeypatch.setenv("GEPA_STREAM_CONFIG", str(_write(tmp_path, ARCHITECTURE_EXAMPLE)))
    settings, policies = load_config()
    assert settings.bootstrap_servers == "kafka:29092"
    assert settings.topics.traces == "acme.traces"
    assert settings.web_port == 7000
    assert policies.prompts[0].name == "support_router"


def test_defaults_match_the_architecture() -> None:
    settings = load_settings()
    assert settings.bootstrap_servers == "localhost:9092"
    assert settings.mlflow_tracking_uri == "sqlite:///.gepa-stream/mlflow.db"
    assert str(settings.config) == "gepa-stream.yaml"
    assert settings.topic_prefix == "gepa."
    assert settings.web_port == 6066
    assert settings.kafka_security_protocol == "PLAINTEXT"


def test_bad_env_var_is_named(monkeypatch) -> None:
    monkeypatch.setenv("GEPA_STREAM_WEB_PORT", "lots")
    with pytest.raises(ConfigError, match="GEPA_STREAM_WEB_PORT"):
        load_settings()


def test_sasl_needs_credentials_and_hides_the_password(monkeypatch) -> None:
    monkeypatch.setenv("GEPA_STREAM_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(ConfigError, match="GEPA_STREAM_KAFKA_SASL_PASSWORD"):
        load_settings()
    monkeypatch.setenv("GEPA_STREAM_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("GEPA_STREAM_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("GEPA_STREAM_KAFKA_SASL_PASSWORD", "hunter2-secret")
    settings = load_settings()
    assert "hunter2-secret" not in repr(settings) and "hunter2-secret" not in str(settings.model_dump())
    assert settings.kafka_python_options()["sasl_plain_password"] == "hunter2-secret"


def test_run_with_a_bad_config_exits_2_without_traceback(tmp_path: Path) -> None:
    path = _write(tmp_path, "prompts: [{name: a, triggers: {cooldown: soon}}]")
    result = CliRunner().invoke(app, ["run", "--config", str(path)])
    assert result.exit_code == 2
    assert str(path) in result.output and "triggers.cooldown" in result.output
    assert "Traceback" not in result.output


def test_run_with_a_bad_role_exits_2() -> None:
    result = CliRunner().invoke(app, ["run", "--role", "everything"])
    assert result.exit_code == 2
