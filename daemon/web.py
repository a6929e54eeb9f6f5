"""HTTP views on the worker's web port: /healthz, /readyz, /metrics, /status."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


def register_views(app: faust.App, ready: Callable[[], bool], status: Callable[[], dict[str, Any]]) -> None:
    """Liveness is the process answering; readiness is "assigned, recovered and rebuilt"."""

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        ok = ready()
        return web.json({"ready": ok}, status=200 if ok else 503)

    @app.page("/metrics")
    async def prometheus(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/status")
    async def status_view(web: Any, request: Any) -> Any:
        return web.json(status())
