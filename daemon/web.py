"""HTTP views on the worker's web port: /healthz, /readyz, /metrics, /status and the ops page (/ui)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import faust
from faust.web import View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from daemon.ops.page import OPS_PATHS, OpsPage


def register_views(
    app: faust.App, ready: Callable[[], bool], status: Callable[[Mapping[str, str]], dict[str, Any]]
) -> None:
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
        return web.json(status(request.query))


def register_ops_page(app: faust.App, page: OpsPage) -> None:
    """Route the ops page's paths (GET and POST) to `page.handle`, which knows no framework."""

    async def serve(view: View, request: Any, method: str) -> Any:
        body = await request.read() if method == "POST" else b""
        reply = await page.handle(
            method, request.path, request.query, request.headers, body, request.remote or "unknown"
        )
        return view.bytes(
            reply.body, status=reply.status, headers={"Content-Type": reply.content_type, **reply.headers}
        )

    for path in OPS_PATHS:

        class OpsView(View):
            async def get(self, request: Any) -> Any:
                return await serve(self, request, "GET")

            async def post(self, request: Any) -> Any:
                return await serve(self, request, "POST")

        app.page(path, name=f"ops{path.replace('/', '_')}")(OpsView)
