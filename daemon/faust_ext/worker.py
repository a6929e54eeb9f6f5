"""A Faust worker whose stop on a signal is bounded (`GEPA_STREAM_SHUTDOWN_TIMEOUT_S`; see docs/faust.md)."""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

import faust

log = logging.getLogger("gepa_stream")
SHUTDOWN_OVERDUE_EXIT = 70  # EX_SOFTWARE: the stop was cut short (its uncommitted work is redelivered)


class BoundedStopWorker(faust.Worker):
    """A Faust worker whose stop on a signal is bounded: after `stop_timeout_s` the process exits
    with `SHUTDOWN_OVERDUE_EXIT`. What it had not committed is redelivered to the group's next
    member (at-least-once, idempotent handlers); its job processes die with it and resume."""

    def __init__(self, *args: Any, stop_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stop_timeout_s = stop_timeout_s

    def _schedule_shutdown(self, signal: signal.Signals) -> None:
        if not self._signal_stop_time:
            watchdog = threading.Timer(self.stop_timeout_s, self._overdue, (signal,))
            watchdog.daemon = True
            watchdog.start()
        super()._schedule_shutdown(signal)

    def _overdue(self, signal: signal.Signals) -> None:
        log.error(
            "stopping on %s took over %.0f s (GEPA_STREAM_SHUTDOWN_TIMEOUT_S; is the broker unreachable?): exiting now",
            signal.name,
            self.stop_timeout_s,
        )
        logging.shutdown()
        os._exit(SHUTDOWN_OVERDUE_EXIT)
