"""The app's express routes (``service.edge.express``): ``POST /classify`` answered straight
from the connection layer when the request has all arrived.

``ExpressRoutes`` is the connection layer's ``express`` hook: given a request's method,
target and headers it names the handler, or None, and the request goes through the ASGI
app as any other. Each handler runs in the request context ``RequestContextMiddleware``
gives an ASGI request (the request id bound and sent back, the access line, the request
metrics, a 500 for an exception nothing answered), and gives the same answer the route's
ASGI call would (``service.api.routes.classify``; the tests compare the two).

A request that carries proxy headers goes the ASGI way: uvicorn's proxy-headers layer may
rewrite its client address from them, which the body budget and the connection limits
count by.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.routing import BaseRoute

from service.api.error_handlers import unexpected_error_response
from service.api.routes import express_routes
from service.edge.express import Answer, ExpressHandler, ExpressRequest
from service.edge.middleware import record_request, request_id_header, start_request
from service.metrics import ServiceMetrics

log = logging.getLogger(__name__)

# Read by uvicorn's proxy-headers layer (``ProxyHeadersMiddleware``).
_PROXY_HEADERS = frozenset({b"x-forwarded-for", b"x-forwarded-proto"})

Respond = Callable[[Any, ExpressRequest], Awaitable[Answer]]


class ExpressRoutes:
    """(method, path) -> the route's express handler, for ``ConnectionLimits.express``."""

    def __init__(self, app: Any, metrics: ServiceMetrics) -> None:
        self.handlers: dict[tuple[str, bytes], ExpressRoute] = {
            (method, path.encode("ascii")): ExpressRoute(app, metrics, route, respond)
            for (method, path), (route, respond) in express_routes().items()
        }

    def __call__(
        self, method: str, target: bytes, headers: list[tuple[bytes, bytes]]
    ) -> ExpressHandler | None:
        handler = self.handlers.get((method, target.partition(b"?")[0]))
        if handler is None:
            return None
        for name, _ in headers:
            if name in _PROXY_HEADERS:
                return None
        return handler


class ExpressRoute:
    """One route's express handler, in a request's context (see the module's docstring)."""

    def __init__(self, app: Any, metrics: ServiceMetrics, route: BaseRoute, respond: Respond):
        self.app = app
        self.metrics = metrics
        self.route = route  # for the metrics' endpoint label, as the ASGI path has it
        self.path: str = route.path  # type: ignore[attr-defined]
        self.respond = respond

    async def __call__(self, request: ExpressRequest) -> Answer:
        request_id = start_request(request.headers)
        started = time.perf_counter()
        try:
            answer = await self.respond(self.app, request)
        except Exception as exc:
            scope = {"type": "http", "app": self.app, "headers": request.headers}
            response = await unexpected_error_response(Request(scope), exc)
            answer = Answer.of(response)
        answer.headers.append(request_id_header(request_id))
        seconds = time.perf_counter() - started
        record_request(self.metrics, self.route, request.method, self.path, answer.status, seconds)
        return answer
