"""MLflow outages as a job sees them: does the tracking server answer, did a failure come from
it not answering (`mlflow_errors.unanswered_request`), and a watch that reports the MLflow client's own retries while they last
(so `/status` and the log say why a job stands still)."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import requests
import tenacity

from optimization.mlflow_errors import unanswered_request

MLFLOW = "MLflow"
PROBE_TIMEOUT_S = 5.0
PROBE_FIRST_S = 1.0
PROBE_MAX_S = 10.0


def is_remote(tracking_uri: str) -> bool:
    """Only a tracking server can be down; a local (sqlite, file) store cannot have an outage."""
    return tracking_uri.startswith(("http://", "https://"))


def tracking_answers(tracking_uri: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True if the tracking server answers `/health` with anything but a 5xx (always True for a local store)."""
    if not is_remote(tracking_uri):
        return True
    verify: bool | str = (
        os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH")
        or os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() != "true"
    )
    try:
        return (
            requests.get(f"{tracking_uri.rstrip('/')}/health", timeout=timeout, verify=verify).status_code
            < 500
        )
    except requests.RequestException:
        return False


def mlflow_outage(exc: BaseException, tracking_uri: str) -> bool:
    """Did `exc` end the job because MLflow was unreachable? (Then the job is retried once it answers.)"""
    return is_remote(tracking_uri) and (
        unanswered_request(exc, tracking_uri) or not tracking_answers(tracking_uri)
    )


async def answers_again(tracking_uri: str, deadline: datetime) -> bool:
    """Probe `/health` with backoff (1 s doubling to 10 s, the last wait cut at `deadline`) until
    MLflow answers (True) or a probe at or past `deadline` fails (False)."""
    backoff = tenacity.wait_exponential(multiplier=PROBE_FIRST_S, max=PROBE_MAX_S)

    def left_s() -> float:
        return (deadline - datetime.now(UTC)).total_seconds()

    probing = tenacity.AsyncRetrying(
        retry=tenacity.retry_if_result(lambda answered: not answered),
        wait=lambda state: min(backoff(state), max(0.0, left_s())),
        stop=lambda state: left_s() <= 0,
        retry_error_callback=lambda state: False,
    )
    answered: bool = await probing(asyncio.to_thread, tracking_answers, tracking_uri)
    return answered


class ClientRetryWatch(logging.Handler):
    """urllib3 logs each retry of a broken connection; from the first retry of an MLflow request
    until `/health` answers again, `report(line)` holds a line saying so (then `report("")`)."""

    def __init__(self, tracking_uri: str, report: Callable[[str], None], interval_s: float = 2.0) -> None:
        super().__init__(logging.WARNING)
        self.tracking_uri = tracking_uri
        self.report = report
        self.interval_s = interval_s
        self.since: datetime | None = None
        self.retries = 0
        self._lock = threading.Lock()

    @classmethod
    def install(cls, tracking_uri: str, report: Callable[[str], None]) -> ClientRetryWatch | None:
        """Attach a watch to urllib3's connection-pool logger (None for a local store)."""
        if not is_remote(tracking_uri):
            return None
        watch = cls(tracking_uri, report)
        logging.getLogger("urllib3.connectionpool").addHandler(watch)
        return watch

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if not message.startswith("Retrying") or "mlflow" not in message:
            return
        with self._lock:
            first = self.since is None
            if self.since is None:
                self.since = datetime.now(UTC)
            self.retries += 1
            self.report(
                f"{MLFLOW} at {self.tracking_uri} has not answered since {self.since:%H:%M:%S} UTC; its client is retrying (retry {self.retries})"
            )
        if first:
            threading.Thread(target=self._until_it_answers, name="mlflow-outage-watch", daemon=True).start()

    def _until_it_answers(self) -> None:
        while not tracking_answers(self.tracking_uri):
            time.sleep(self.interval_s)
        with self._lock:
            self.since = None
            self.retries = 0
            self.report("")
