"""Per-request context: request id, access log, request counters and latency.

A plain ASGI middleware (not ``BaseHTTPMiddleware``) so it adds no extra task
or body buffering to the hot path. The route template, not the raw path, is
the ``endpoint`` label, keeping metric cardinality fixed.

The app holds it more than once: in FastAPI's middleware stack, for every route, and in
front of everything FastAPI does for each of ``fast_routes`` (``service.api.routes``;
``service.app.ServiceApp``), given the route (for the ``endpoint`` label) and the 500
handler that FastAPI's outermost layer would otherwise call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.logs import AccessLog, bind_request_id, new_request_id
from service.metrics import ServiceMetrics

access_log = AccessLog(logging.getLogger("service.access"))

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_NAME = REQUEST_ID_HEADER.lower().encode("latin-1")
# Probes and scrapes arrive every few seconds; their access lines are debug-level.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_QUIET_PATHS = frozenset({"/metrics", "/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"})


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        metrics: ServiceMetrics,
        route: BaseRoute | None = None,
        on_error: Callable[[Request, Exception], Awaitable[Response]] | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.route = route  # the one route ``app`` serves, when it is not the whole router
        self.on_error = on_error  # answers an exception ``app`` raises, as the app's own 500

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Each request runs in its own task, so the id never leaks into the next one; it
        # is left bound so that the outermost 500 handler can still report it.
        request_id = start_request(scope["headers"])
        started = time.perf_counter()
        status = 0  # none sent yet; the client gets a 500 if the app raises before one

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.get("headers", [])
                # As MutableHeaders(scope=message).append, without building one per answer.
                message["headers"] = [*headers, request_id_header(request_id)]
            await send(message)

        if self.route is not None:
            scope["route"] = self.route
        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if self.on_error is None:
                raise
            # As Starlette's ServerErrorMiddleware: answer when nothing was sent, re-raise.
            response = await self.on_error(Request(scope, receive), exc)
            if not status:
                await response(scope, receive, send_with_id)
            raise
        finally:
            self._record(scope, status or 500, time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        path = scope.get("path", "")
        record_request(self.metrics, route, scope.get("method", ""), path, status, seconds)


def start_request(headers: list[tuple[bytes, bytes]]) -> str:
    """A request's id, bound to the current context (the request's task) for its log lines:
    the client's own ``X-Request-ID`` when it is a valid one, else a new one."""
    request_id = new_request_id(_client_request_id(headers))
    bind_request_id(request_id)
    return request_id


def request_id_header(request_id: str) -> tuple[bytes, bytes]:
    return (_REQUEST_ID_NAME, request_id.encode("latin-1"))


def record_request(
    metrics: ServiceMetrics,
    route: BaseRoute | None,
    method: str,
    path: str,
    status: int,
    seconds: float,
) -> None:
    """Count a request and write its access line (``route``: the one it matched)."""
    endpoint = getattr(route, "path", None) or "unmatched"
    method = method if method in _METHODS else "OTHER"
    metrics.observe_request(endpoint, method, status, seconds)
    level = logging.DEBUG if path in _QUIET_PATHS else logging.INFO
    access_log.write(level, method, path, status, seconds)


def _client_request_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The first ``X-Request-ID`` header's value (names arrive lower-cased, as ASGI says)."""
    for name, value in headers:
        if name == _REQUEST_ID_NAME:
            return value.decode("latin-1")
    return None


def route_path(scope: Scope) -> str:
    """The path the routes see: without the ``root_path`` a proxy mounted us under."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path
