"""Build and run one daemon process (`gepa-stream run`)."""

from __future__ import annotations

import logging
import os
from typing import Any, Literal

import faust
from faust.app.base import BootStrategy

from daemon.admin import ensure_topics
from daemon.app import IngestApp, broker_credentials
from daemon.jobs.runner import JobRunner
from daemon.recovery import ExactEndTableManager
from daemon.settings import Settings
from daemon.ops.page import OpsPage
from daemon.web import register_ops_page, register_views
from schemas.config import PolicyFile

Role = Literal["all", "ingest", "optimizer"]


def build_faust_app(settings: Settings, app_id: str | None = None) -> faust.App:
    """The Faust app with the process settings (broker, security, group timing, web port)."""
    app_id = app_id or settings.app_id
    (settings.state_dir / "faust").mkdir(parents=True, exist_ok=True)
    return faust.App(
        app_id,
        broker=[f"kafka://{server.strip()}" for server in settings.bootstrap_servers.split(",")],
        broker_credentials=broker_credentials(settings),
        store="memory://",
        TableManager=ExactEndTableManager,  # the embedded broker reports changelog ends short
        datadir=str(settings.state_dir / "faust" / app_id),
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


def without_kafka(app: faust.App) -> faust.App:
    """Faust as host only: the web views, app tasks and signal handling, no Kafka clients.

    The optimizer role has no Faust streams or tables; its job runner consumes with its own
    aiokafka group. A Faust consumer would have nothing to subscribe to (Faust then stops
    the worker: "You should provide either topics or pattern"), so the app runs in Faust's
    producer-only mode with Kafka disabled, which starts the web server and nothing else.
    """
    app.producer_only = True
    app.boot_strategy = BootStrategy(app, enable_kafka=False)
    return app


class Daemon:
    """The roles of one process on one Faust app: ingest agents and/or the job runner."""

    def __init__(self, settings: Settings, policies: PolicyFile, role: Role = "all") -> None:
        if role == "optimizer":
            self.app = without_kafka(build_faust_app(settings, f"{settings.app_id}-optimizer"))
        else:
            self.app = build_faust_app(settings)
        self.ingest = IngestApp(settings, policies, self.app) if role in ("all", "ingest") else None
        self.runner = JobRunner(settings, policies) if role in ("all", "optimizer") else None
        if self.runner is not None:
            self.app.task(self.runner.run)
        register_views(self.app, ready=self.ready, status=self.status)
        self.ops = OpsPage(
            settings,
            policies,
            role,
            windows=(lambda: self.ingest.status()["prompts"]) if self.ingest is not None else None,
            jobs=self.runner.status if self.runner is not None else None,
        )
        self.app.task(self.ops.bus.run)
        self.app.task(self.ops.live.run)
        register_ops_page(self.app, self.ops)

    def ready(self) -> bool:
        return all(part.ready for part in (self.ingest, self.runner) if part is not None)

    def status(self) -> dict[str, Any]:
        body = self.ingest.status() if self.ingest is not None else {"prompts": {}}
        body["ready"] = self.ready()
        body["jobs"] = self.runner.status() if self.runner is not None else {}
        if self.runner is not None:
            body["optimizer"] = {"assigned": self.runner.assignment()}
        return body


def run(settings: Settings, policies: PolicyFile, role: Role = "all") -> None:
    """1. create missing topics, 2. build the roles, 3. run until SIGINT/SIGTERM."""
    os.environ.setdefault("MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri)
    ensure_topics(settings)
    daemon = Daemon(settings, policies, role)
    logging.getLogger("gepa_stream").setLevel(settings.log_level.upper().replace("WARN", "WARNING"))
    faust.Worker(daemon.app, loglevel=settings.log_level, quiet=True).execute_from_commandline()
