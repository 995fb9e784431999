"""Per-request context: request id, access log, request counters and latency.

A plain ASGI middleware (not ``BaseHTTPMiddleware``) so it adds no extra task
or body buffering to the hot path. The route template, not the raw path, is
the ``endpoint`` label, keeping metric cardinality fixed.

``fast_routes`` maps (method, path) to a route served straight from here, past
FastAPI's routing and dependency layers: ``POST /classify``, whose handler answers
every error itself (``service.api.routes.classify.serve``).
"""

from __future__ import annotations

import logging
import time

from starlette.datastructures import Headers, MutableHeaders
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.logs import bind_request_id, new_request_id
from service.metrics import ServiceMetrics

access_log = logging.getLogger("service.access")

REQUEST_ID_HEADER = "X-Request-ID"
# Probes and scrapes arrive every few seconds; their access lines are debug-level.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_QUIET_PATHS = frozenset({"/metrics", "/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"})


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        metrics: ServiceMetrics,
        fast_routes: dict[tuple[str, str], tuple[BaseRoute, ASGIApp]] | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.fast_routes = fast_routes or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id(Headers(scope=scope).get(REQUEST_ID_HEADER))
        # Each request runs in its own task, so the id never leaks into the next one; it
        # is left bound so that the outermost 500 handler can still report it.
        bind_request_id(request_id)
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before responding

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, request_id)
            await send(message)

        fast = self.fast_routes.get((scope["method"], _route_path(scope)))
        try:
            if fast is None:
                await self.app(scope, receive, send_with_id)
            else:
                scope["route"], endpoint = fast
                await endpoint(scope, receive, send_with_id)
        finally:
            self._record(scope, status, time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        endpoint = getattr(route, "path", None) or "unmatched"
        method = scope.get("method", "")
        method = method if method in _METHODS else "OTHER"
        self.metrics.observe_request(endpoint, method, status, seconds)
        level = logging.DEBUG if scope.get("path") in _QUIET_PATHS else logging.INFO
        if access_log.isEnabledFor(level):
            access_log.log(
                level,
                "%s %s %d",
                method,
                scope.get("path", ""),
                status,
                extra={"status": status, "duration_seconds": round(seconds, 6)},
            )


def _route_path(scope: Scope) -> str:
    """The path the routes see: without the ``root_path`` a proxy mounted us under."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path
