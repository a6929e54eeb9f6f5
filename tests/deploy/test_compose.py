"""docker-compose.yml without a Docker engine: the Compose Specification schema, the service
graph (dependencies, healthchecks), the settings of the daemon roles and the OTel bridge, ports,
the Prometheus targets, Grafana provisioning, and every file the services mount."""

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
    bridge_services,
    compose,
    container_env,
    daemon_services,
    depends_on,
    environment,
    healthcheck_urls,
    image_services,
    mounted_from,
    mounts,
    option,
    services,
)
from tests.deploy.metric_names import dashboard_metric_names, exported_metric_names, load_dashboard

SECRETS_EXAMPLE = ROOT / "deploy" / "secrets.env.example"


def compose_spec() -> dict[str, Any]:
    """The Compose Specification JSON schema (draft-07), as check-jsonschema vendors it (with its license)."""
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads(vendor.joinpath("compose-spec.json").read_text())


def setting_name(variable: str) -> str:
    return variable.removeprefix("GEPA_STREAM_").lower()


def web_port() -> int:
    ports = {int(container_env(s)["GEPA_STREAM_WEB_PORT"]) for s in daemon_services().values()}
    assert len(ports) == 1, f"daemon services disagree on the web port: {ports}"
    return ports.pop()


def served_port(name: str) -> int:
    """Where a service of the image serves /healthz and /metrics: the bridge on its --http-port,
    a daemon role on the web port."""
    return int(option(name, "--http-port")) if name in bridge_services() else web_port()


def mounted_file(service: str, container_path: str) -> Path:
    path = mounted_from(services()[service], container_path)
    assert path is not None, f"{service}: nothing from the repo is mounted at {container_path}"
    assert path.exists(), f"{service}: {path.relative_to(ROOT)} (mounted at {container_path}) is missing"
    return path


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


def test_the_otel_bridge_reads_the_collector_topic_and_waits_for_kafka_only() -> None:
    """Every service of the image is a daemon role or the bridge, so none escapes the checks here;
    the bridge reads the topic and encoding of the README's Collector example."""
    assert set(image_services()) == set(daemon_services()) | set(bridge_services()), sorted(image_services())
    assert bridge_services(), "the deployment runs no OTel bridge"
    for name, service in bridge_services().items():
        assert set(depends_on(service)) == {"kafka"}, f"{name} needs Kafka only"
        assert (option(name, "--topic"), option(name, "--encoding")) == ("otlp_spans", "otlp_proto"), name
    for name, service in image_services().items():
        assert service["restart"] == "unless-stopped", name


def test_env_vars_of_the_image_services_are_real_settings_with_valid_values() -> None:
    documented = re.findall(r"^#?\s*(GEPA_STREAM_\w+)=", SECRETS_EXAMPLE.read_text(), re.MULTILINE)
    assert documented
    for variable in documented:
        assert setting_name(variable) in Settings.model_fields, (
            f"{SECRETS_EXAMPLE.name}: {variable} is no setting"
        )
    for name, service in image_services().items():
        env = {k: v for k, v in container_env(service).items() if k.startswith("GEPA_STREAM_")}
        unknown = sorted(k for k in env if setting_name(k) not in Settings.model_fields)
        assert not unknown, f"{name} sets variables that are no setting: {unknown}"
        settings = Settings(**{setting_name(k): v for k, v in env.items()})
        assert settings.web_host == "0.0.0.0", f"{name}: its port must be reachable from other containers"


def test_addresses_of_the_image_services_point_at_the_kafka_and_mlflow_services() -> None:
    kafka = environment(services()["kafka"])
    advertised = {listener.split("://", 1)[1] for listener in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    mlflow_port = option("mlflow", "--port")
    for name, service in image_services().items():
        env = container_env(service)
        assert set(env["GEPA_STREAM_BOOTSTRAP_SERVERS"].split(",")) <= advertised, name
        uri = urlsplit(env["GEPA_STREAM_MLFLOW_TRACKING_URI"])
        assert (uri.hostname, str(uri.port)) == ("mlflow", mlflow_port), name
        assert env["GEPA_STREAM_PARTITIONS"] == str(kafka["KAFKA_NUM_PARTITIONS"]), (
            "auto-created topics must co-partition"
        )


def test_ports_healthchecks_and_prometheus_targets_match_the_port_each_service_serves() -> None:
    """Exposed, published on the host's loopback, probed and scraped where the service listens."""
    config = yaml.safe_load(mounted_file("prometheus", option("prometheus", "--config.file")).read_text())
    targets = [
        (name, job["metrics_path"], discovery["port"])
        for job in config["scrape_configs"]
        for discovery in job["dns_sd_configs"]
        for name in discovery["names"]
    ]
    assert {name for name, _, _ in targets} == set(image_services())
    for name, service in image_services().items():
        port = served_port(name)
        assert [int(p) for p in service.get("expose", [])] == [port], name
        for published in service.get("ports", []):
            host_ip, _, container_port = str(published).split(":")
            assert (host_ip, int(container_port)) == ("127.0.0.1", port), f"{name}: {published}"
        assert [(path, p) for n, path, p in targets if n == name] == [("/metrics", port)], name
        if name in daemon_services() and "healthcheck" not in service:
            continue  # the image's HEALTHCHECK probes the web port (tests/deploy/test_dockerfile.py)
        assert healthcheck_urls(service) == [f"http://127.0.0.1:{port}/healthz"], name


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
    for name, service in image_services().items():
        policies = load_policy_file(mounted_file(name, container_env(service)["GEPA_STREAM_CONFIG"]))
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
    location = container_env(services()[service])[path] if path.startswith("GEPA") else option(service, path)
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
