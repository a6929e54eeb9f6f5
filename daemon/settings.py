"""Process settings from `GEPA_STREAM_*` environment variables (pydantic-settings).

Secrets are `SecretStr`: they print as `**********` in logs, reprs and /status.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.config import ConfigError, PolicyFile, load_policy_file
from schemas.topics import Topics

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
MIN_ADMIN_TOKEN_CHARS = 16


class Settings(BaseSettings):
    """Everything a process needs besides the per-prompt policy file."""

    model_config = SettingsConfigDict(env_prefix="GEPA_STREAM_", extra="ignore", validate_default=True)

    bootstrap_servers: str = "localhost:9092"
    mlflow_tracking_uri: str = "sqlite:///.gepa-stream/mlflow.db"
    mlflow_experiment: str = Field(
        default="gepa-stream", min_length=1, description="where jobs log their MLflow runs"
    )
    config: Path = Path("gepa-stream.yaml")
    topic_prefix: str = Field(default="gepa.", pattern=r"^[A-Za-z0-9._\-]*$")
    state_dir: Path = Path(".gepa-stream")
    web_port: int = Field(default=6066, ge=0, le=65535)
    web_host: str = "127.0.0.1"
    app_id: str = Field(default="gepa-stream", description="Kafka consumer group / Faust app id")
    partitions: int = Field(
        default=3, ge=1, description="partitions of the co-partitioned topics created at start"
    )
    replication_factor: int = Field(default=1, ge=1)
    max_event_bytes: int = Field(default=512 * 1024, ge=1024, description="larger records go to the DLQ")
    max_concurrent_jobs: int = Field(default=1, ge=1)
    # Consumer-group timing. Short values suit the embedded broker (group joins there wait the
    # full rebalance timeout); raise them for large production groups.
    session_timeout_s: float = Field(default=10.0, gt=0)
    heartbeat_interval_s: float = Field(default=1.0, gt=0)
    rebalance_timeout_s: float = Field(default=5.0, gt=0)
    commit_interval_s: float = Field(default=1.0, gt=0)
    # Ingest handles records in batches: one fills for at most this long, so a trigger fires at
    # most this long (plus the batch's processing) after its threshold event arrives.
    ingest_batch_interval_s: float = Field(default=0.25, gt=0, le=5.0)
    log_level: Literal["debug", "info", "warn", "error", "critical"] = "info"
    # The policy file is read again when it changes (checked this often; 0: only on SIGHUP).
    policy_poll_s: float = Field(default=2.0, ge=0)
    # A stop (SIGTERM, SIGINT) that has not finished after this long exits anyway: with the broker
    # unreachable, the Kafka clients' last commits and flushes would retry for minutes. Below
    # compose's 10 s and Kubernetes' 30 s before their SIGKILL.
    shutdown_timeout_s: float = Field(default=8.0, gt=0, le=300)
    # Kafka security, applied to every client the daemon creates.
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    # The ops page's actions (approve, reject, rollback, optimize) are off unless this is set.
    admin_token: SecretStr | None = Field(
        default=None, description="bearer token the ops page's actions require"
    )

    # OTLP/HTTP ingestion (`bridge otel --http-port`): open unless this is set, then a bearer token.
    ingest_token: SecretStr | None = Field(
        default=None, description="bearer token POST /v1/traces requires (unset: no auth)"
    )

    @field_validator("admin_token", "ingest_token")
    @classmethod
    def _strong_token(cls, value: SecretStr | None) -> SecretStr | None:
        """An empty token means "off"; a short one is refused (one guards production changes, the
        other what the optimizer learns from)."""
        if value is None or not value.get_secret_value():
            return None
        if len(value.get_secret_value()) < MIN_ADMIN_TOKEN_CHARS:
            raise ValueError(f"must be at least {MIN_ADMIN_TOKEN_CHARS} characters (or unset)")
        return value

    @model_validator(mode="after")
    def _sasl_complete(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL"):
            missing = [
                name
                for name in ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password")
                if getattr(self, name) is None
            ]
            if missing:
                names = ", ".join(f"GEPA_STREAM_{n.upper()}" for n in missing)
                raise ValueError(f"security protocol {self.kafka_security_protocol} needs {names}")
        return self

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    def kafka_python_options(self) -> dict[str, Any]:
        """Security options in kafka-python's spelling (admin client, producers, tools)."""
        options: dict[str, Any] = {"security_protocol": self.kafka_security_protocol}
        if self.kafka_sasl_mechanism:
            options["sasl_mechanism"] = self.kafka_sasl_mechanism
            options["sasl_plain_username"] = self.kafka_sasl_username
            options["sasl_plain_password"] = (
                self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else None
            )
        if self.kafka_ssl_cafile:
            options["ssl_cafile"] = str(self.kafka_ssl_cafile)
        return options

    def ssl_context(self) -> Any:
        """The TLS context of the aiokafka-based clients (Faust, the job runner); None without SSL.
        No CA file means the system CAs (managed clusters with public certificates)."""
        if "SSL" not in self.kafka_security_protocol:
            return None
        from aiokafka.helpers import create_ssl_context

        return create_ssl_context(cafile=str(self.kafka_ssl_cafile) if self.kafka_ssl_cafile else None)

    def aiokafka_options(self) -> dict[str, Any]:
        """Security options in aiokafka's spelling (the job runner's consumer and producer)."""
        options = self.kafka_python_options()
        options.pop("ssl_cafile", None)
        context = self.ssl_context()
        if context is not None:
            options["ssl_context"] = context
        return options


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment (plus explicit overrides), or ConfigError naming the variable."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            name = (
                "GEPA_STREAM_" + "_".join(str(p) for p in error["loc"]).upper()
                if error["loc"]
                else "settings"
            )
            problems.append(f"{name}: {str(error['msg']).removeprefix('Value error, ')}")
        raise ConfigError("; ".join(problems)) from None


def load_config(config: Path | None = None, **overrides: Any) -> tuple[Settings, PolicyFile]:
    """1. settings from env, 2. the policy file they (or `config`) name; ConfigError on either."""
    settings = load_settings(config=config, **overrides)
    return settings, load_policy_file(settings.config)
