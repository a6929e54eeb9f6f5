"""docker-compose.yml without a Docker engine: the Compose Specification schema, the service
graph (dependencies, healthchecks), daemon settings, ports, the Prometheus target, Grafana
provisioning, and every file the services mount."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from jsonschema import Draft7Validator
from prometheus_client import REGISTRY, generate_latest

import daemon.prometheus_metrics  # noqa: F401  (registers the daemon's metrics)
from daemon.settings import Settings
from schemas.config import load_policy_file
from tests.deploy.deployment import (
    ROOT,
    compose,
    daemon_services,
    depends_on,
    environment,
    image_env,
    mounted_from,
    mounts,
    services,
)
from tests.deploy.metric_names import dashboard_metric_names, exported_metric_names, load_dashboard

SECRETS_EXAMPLE = ROOT / "deploy" / "secrets.env.example"


def compose_spec() -> dict[str, Any]:
    """The Compose Specification JSON schema (draft-07), as check-jsonschema vendors it (with its license)."""
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads(vendor.joinpath("compose-spec.json").read_text())


def daemon_env(service: dict[str, Any]) -> dict[str, str]:
    """What a daemon container sees: the image's ENV overlaid by the service's environment."""
    return {**image_env(), **environment(service)}


def setting_name(variable: str) -> str:
    return variable.removeprefix("GEPA_STREAM_").lower()


def web_port() -> int:
    ports = {int(daemon_env(s)["GEPA_STREAM_WEB_PORT"]) for s in daemon_services().values()}
    assert len(ports) == 1, f"daemon services disagree on the web port: {ports}"
    return ports.pop()


def mounted_file(service: str, container_path: str) -> Path:
    path = mounted_from(services()[service], container_path)
    assert path is not None, f"{service}: nothing from the repo is mounted at {container_path}"
    assert path.exists(), f"{service}: {path.relative_to(ROOT)} (mounted at {container_path}) is missing"
    return path


def option(service: str, flag: str) -> str:
    """The value of `--flag=value` in a service's command."""
    values = [word.split("=", 1)[1] for word in services()[service]["command"] if word.startswith(f"{flag}=")]
    assert len(values) == 1, f"{service}: expected one {flag}=..."
    return values[0]


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    errors = sorted(
        Draft7Validator(compose_spec()).iter_errors(compose()), key=lambda e: list(map(str, e.absolute_path))
    )
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_every_dependency_exists_has_a_healthcheck_and_is_waited_for() -> None:
    for name, service in services().items():
        for target, spec in depends_on(service).items():
            assert target in services(), f"{name} depends on unknown service {target}"
            check = services()[target].get("healthcheck") or {}
            assert check.get("test") and not check.get("disable"), (
                f"{name} depends on {target}, which has no healthcheck"
            )
            assert spec.get("condition") == "service_healthy", (
                f"{name} does not wait for {target} to be healthy"
            )


def test_daemon_roles_run_against_healthy_kafka_and_mlflow() -> None:
    roles = set()
    for name, service in daemon_services().items():
        assert {"kafka", "mlflow"} <= set(depends_on(service)), name
        words = service["command"]
        roles.add(words[words.index("--role") + 1])
    assert roles in ({"ingest", "optimizer"}, {"all"}), roles
    assert services()["kafka"]["image"].startswith("apache/kafka:3.9."), (
        "Faust has reported trouble with Kafka 4"
    )


def test_daemon_env_vars_are_real_settings_with_valid_values() -> None:
    documented = re.findall(r"^#?\s*(GEPA_STREAM_\w+)=", SECRETS_EXAMPLE.read_text(), re.MULTILINE)
    assert documented
    for variable in documented:
        assert setting_name(variable) in Settings.model_fields, (
            f"{SECRETS_EXAMPLE.name}: {variable} is no setting"
        )
    for name, service in daemon_services().items():
        env = {k: v for k, v in daemon_env(service).items() if k.startswith("GEPA_STREAM_")}
        unknown = sorted(k for k in env if setting_name(k) not in Settings.model_fields)
        assert not unknown, f"{name} sets variables that are no setting: {unknown}"
        settings = Settings(**{setting_name(k): v for k, v in env.items()})
        assert settings.web_host == "0.0.0.0", f"{name}: the web port must be reachable from other containers"


def test_daemon_addresses_point_at_the_kafka_and_mlflow_services() -> None:
    kafka = environment(services()["kafka"])
    advertised = {listener.split("://", 1)[1] for listener in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    mlflow_port = option("mlflow", "--port")
    for name, service in daemon_services().items():
        env = daemon_env(service)
        assert set(env["GEPA_STREAM_BOOTSTRAP_SERVERS"].split(",")) <= advertised, name
        uri = urlsplit(env["GEPA_STREAM_MLFLOW_TRACKING_URI"])
        assert (uri.hostname, str(uri.port)) == ("mlflow", mlflow_port), name
        assert env["GEPA_STREAM_PARTITIONS"] == str(kafka["KAFKA_NUM_PARTITIONS"]), (
            "auto-created topics must co-partition"
        )


def test_ports_and_the_prometheus_target_match_the_daemon_web_port() -> None:
    port = web_port()
    for name, service in daemon_services().items():
        assert [int(p) for p in service.get("expose", [])] == [port], name
    config = yaml.safe_load(mounted_file("prometheus", option("prometheus", "--config.file")).read_text())
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "gepa-stream"]
    assert job["metrics_path"] == "/metrics"
    (discovery,) = job["dns_sd_configs"]
    assert discovery["port"] == port
    assert sorted(discovery["names"]) == sorted(daemon_services())


def test_every_mounted_file_exists() -> None:
    for name, service in services().items():
        for mount in mounts(service):
            if mount.bind:
                assert (ROOT / mount.source).exists(), f"{name}: {mount.source} is missing"
            else:
                assert mount.source in compose()["volumes"], f"{name}: volume {mount.source} is not declared"
        for env_file in service.get("env_file") or []:
            entry = env_file if isinstance(env_file, dict) else {"path": env_file}
            assert not entry.get("required", True) or (ROOT / entry["path"]).exists(), (
                f"{name}: {entry['path']}"
            )


def test_the_mounted_policy_file_loads() -> None:
    for name, service in daemon_services().items():
        policies = load_policy_file(mounted_file(name, daemon_env(service)["GEPA_STREAM_CONFIG"]))
        assert policies.prompts, name


@pytest.mark.parametrize(
    "service,path",
    [
        ("optimizer", "GEPA_STREAM_STATE_DIR"),
        ("mlflow", "--backend-store-uri"),
        ("mlflow", "--artifacts-destination"),
    ],
)
def test_state_lives_on_named_volumes(service: str, path: str) -> None:
    """Job run dirs and the MLflow store survive container re-creation."""
    location = daemon_env(services()[service])[path] if path.startswith("GEPA") else option(service, path)
    location = location.removeprefix("sqlite:///")
    assert any(
        not m.bind and (location == m.target or location.startswith(m.target.rstrip("/") + "/"))
        for m in mounts(services()[service])
    ), f"{service}: {location} is not on a named volume"


def test_grafana_provisioning_loads_the_dashboard_from_prometheus() -> None:
    provisioning = mounted_file("grafana", "/etc/grafana/provisioning")
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    url = urlsplit(datasource["url"])
    assert url.hostname == "prometheus" and url.port == 9090
    assert any(p.startswith("9090") for p in services()["prometheus"]["ports"])
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "gepa-stream.yml").read_text())["providers"]
    dashboards = mounted_file("grafana", provider["options"]["path"])
    assert (dashboards / "gepa-stream.json").exists()
    uids = {ds["uid"] for ds in _datasources(load_dashboard())}
    assert uids == {datasource["uid"]}, "every panel must query the provisioned datasource"


def _datasources(node: object) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        own = [node["datasource"]] if isinstance(node.get("datasource"), dict) else []
        return own + [ds for value in node.values() for ds in _datasources(value)]
    if isinstance(node, list):
        return [ds for value in node for ds in _datasources(value)]
    return []


def test_dashboard_uses_only_declared_metrics_and_answers_the_ops_questions() -> None:
    """The quick, in-process half of the contract; tests/integration/test_deploy_daemon.py
    checks the same names against a running daemon's /metrics."""
    used = dashboard_metric_names(load_dashboard())
    assert used <= exported_metric_names(generate_latest(REGISTRY).decode())
    wanted = {
        "gepa_stream_events_total",
        "gepa_stream_dead_letters_total",
        "gepa_stream_window_examples",
        "gepa_stream_jobs_in_flight",
        "gepa_stream_jobs_total",
        "gepa_stream_promotions_total",
    }
    assert wanted <= used
    rollout = {  # the staged rollout's row: share and stage, each arm's mean and n, the bounds
        "gepa_stream_rollout_traffic_share",
        "gepa_stream_rollout_stage",
        "gepa_stream_rollout_mean_rating",
        "gepa_stream_rollout_ratings",
        "gepa_stream_rollout_votes_needed",
        "gepa_stream_rollout_bound",
        "gepa_stream_rollout_state",
    }
    assert rollout <= used
    assert 'decision="rolled_back"' in json.dumps(load_dashboard()).replace('\\"', '"')
