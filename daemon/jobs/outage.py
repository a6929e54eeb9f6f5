"""MLflow outages as a job sees them, defined here only: does the tracking server answer, did a
failure come from a call of its API going unanswered, and a watch that reports the MLflow client's
own retries of such calls while they last (so `/status` and the log say why a job stands still)."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

import requests
import tenacity

from optimization.mlflow_errors import INTERNAL, error_code

MLFLOW = "MLflow"
URLLIB3_RETRY = "__urllib3-retry-warning"
"""The attribute urllib3 puts on its log record of each retry of a broken connection (`{"host": the
pool's host}`; kept for pip, urllib3 issue 2580); the record's args are (retries, error, url)."""
PROBE_TIMEOUT_S = 5.0
PROBE_FIRST_S = 1.0
PROBE_MAX_S = 10.0


def is_remote(tracking_uri: str) -> bool:
    """Only a tracking server can be down; a local (sqlite, file) store cannot have an outage."""
    return tracking_uri.startswith(("http://", "https://"))


def calls_mlflow(tracking_uri: str, url: str, host: str | None = None) -> bool:
    """Is `url` a call of MLflow's REST API on the tracking server (under `<tracking URI>/api/`)? A
    URL that is only a path (as urllib3 logs it) is on `host`, the port unknown."""
    server, request = urlsplit(tracking_uri), urlsplit(url)
    if request.netloc:
        on_server = (request.scheme, request.hostname, request.port) == (
            server.scheme,
            server.hostname,
            server.port,
        )
    else:
        on_server = host == server.hostname
    return on_server and request.path.startswith(server.path.rstrip("/") + "/api/")


def unanswered_request(exc: BaseException, tracking_uri: str) -> bool:
    """True if `exc` or an exception it chains is the MLflow client giving up on a call to
    `tracking_uri` (connection refused, timeouts, or 5xx answers after its retries): an
    `INTERNAL_ERROR` raised while handling the `requests` error of that call."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        underlying = current.__cause__ or current.__context__
        if error_code(current) == INTERNAL and isinstance(underlying, requests.RequestException):
            if calls_mlflow(tracking_uri, getattr(underlying.request, "url", None) or ""):
                return True
        current = underlying
    return False


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
    """urllib3 logs each retry of a broken connection; from the first retry of a call of MLflow's
    API until `/health` answers again, `report(line)` holds a line saying so (then `report("")`).
    The record is read by its structured parts (`URLLIB3_RETRY`, its url argument), never its text."""

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
        retry = getattr(record, URLLIB3_RETRY, None)
        if not isinstance(retry, dict) or not isinstance(record.args, tuple) or len(record.args) != 3:
            return
        if not calls_mlflow(self.tracking_uri, str(record.args[2]), retry.get("host")):
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
