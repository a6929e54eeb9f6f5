"""Build and run one daemon process (`gepa-stream run`)."""

from __future__ import annotations

import logging
from typing import Literal

import faust

from daemon.admin import ensure_topics
from daemon.app import IngestApp, broker_credentials
from daemon.settings import Settings
from daemon.web import register_views
from schemas.config import PolicyFile

Role = Literal["all", "ingest", "optimizer"]


def build_faust_app(settings: Settings) -> faust.App:
    """The Faust app with the process settings (broker, security, group timing, web port)."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    return faust.App(
        settings.app_id,
        broker=[f"kafka://{server.strip()}" for server in settings.bootstrap_servers.split(",")],
        broker_credentials=broker_credentials(settings),
        store="memory://",
        datadir=str(settings.state_dir / "faust"),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        broker_commit_interval=settings.commit_interval_s,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_in_thread=False,
    )


def build(settings: Settings, policies: PolicyFile, role: Role = "all") -> tuple[faust.App, IngestApp | None]:
    """1. create missing topics, 2. the Faust app, 3. the role's agents, 4. the web views."""
    ensure_topics(settings)
    app = build_faust_app(settings)
    ingest = IngestApp(settings, policies, app) if role in ("all", "ingest") else None
    register_views(
        app,
        ready=lambda: ingest.ready if ingest is not None else True,
        status=lambda: ingest.status() if ingest is not None else {"ready": True, "prompts": {}},
    )
    return app, ingest


def run(settings: Settings, policies: PolicyFile, role: Role = "all") -> None:
    """Run until SIGINT/SIGTERM."""
    app, _ = build(settings, policies, role)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    logging.getLogger("gepa_stream").setLevel(settings.log_level.upper().replace("WARN", "WARNING"))
    worker.execute_from_commandline()
