"""The Faust application of one worker process: broker, security, group timing, web server.

The ingest agent (`daemon/ingest_agent.py`) adds its topics, tables and agent to it; the optimizer
role runs it as a host for the web views only (`without_kafka`).
"""

from __future__ import annotations

from typing import Any

import faust
from faust.app.base import BootStrategy

from daemon.faust_ext.recovery import BulkReplayTableManager
from daemon.faust_ext.table_batch import BATCH_BYTES
from daemon.faust_ext.transport import ShortFetchTransport
from daemon.settings import Settings


def broker_credentials(settings: Settings) -> Any:
    """Faust credentials for SSL / SASL from the settings (None for plaintext)."""
    context = settings.ssl_context()
    if settings.kafka_security_protocol.startswith("SASL"):
        assert settings.kafka_sasl_password is not None  # checked by Settings
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get_secret_value(),
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def build_faust_app(settings: Settings, app_id: str | None = None) -> faust.App:
    """The Faust app with the process settings (broker, security, group timing, web port)."""
    app_id = app_id or settings.app_id
    (settings.state_dir / "faust").mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id,
        broker=[f"kafka://{server.strip()}" for server in settings.bootstrap_servers.split(",")],
        broker_credentials=broker_credentials(settings),
        store="memory://",
        TableManager=BulkReplayTableManager,  # bulk changelog replay to each partition's real end
        # A standby replica would replay the other workers' changelogs here all the time, for
        # nothing: a memory store keeps only its active partitions' keys at each rebalance.
        table_standby_replicas=0,
        datadir=str(settings.state_dir / "faust" / app_id),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        broker_commit_interval=settings.commit_interval_s,
        producer_max_batch_size=BATCH_BYTES,  # the ingest agent's table batches (daemon/faust_ext/table_batch.py)
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_in_thread=False,
    )
    app.transport = ShortFetchTransport(app.conf.broker_consumer, app)
    return app


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
