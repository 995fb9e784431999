"""The one place that turns exceptions into responses: statuses, bodies, counts, logs.

A ``ServiceError`` answers with its own status and reason; invalid parameters with
422 ``invalid_request``; Starlette's 404/405 with the same JSON body; anything
else with a bare 500 whose traceback goes to the log, never to the client.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from service.errors import ServiceError, error_body
from service.logs import current_request_id

log = logging.getLogger(__name__)


def error_response(
    status: int,
    reason: str,
    message: str,
    retry_after: int | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    headers = dict(headers or {})
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    body = error_body(message, reason, current_request_id())
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def allowed_methods(request: Request) -> str:
    """Every method some route answers on this request's path, for a 405's ``Allow``.

    ``app.state.route_methods`` is the (path pattern, methods) table ``include_routers``
    builds; Starlette's own ``Allow`` names only the first route whose path matched."""
    path = request.scope.get("path", "")
    table = getattr(request.app.state, "route_methods", ())
    methods = {m for pattern, allowed in table if pattern.match(path) for m in allowed}
    return ", ".join(sorted(methods))


def service_error_response(request: Request, exc: ServiceError, retry_after: int) -> Response:
    """A ``ServiceError`` as the client sees it: logged, counted, answered in JSON."""
    log.info("rejected %s: %s", exc.reason, exc.detail, extra={"reason": exc.reason})
    _count(request, exc.reason)
    retry = retry_after if exc.retryable else None
    return error_response(exc.status, exc.reason, exc.message, retry, exc.headers)


def validation_error_response(request: Request, errors: Sequence[Any]) -> Response:
    """Invalid parameters (pydantic's error list, ``loc`` naming where) as a 422."""
    first = errors[0] if errors else {}
    where = ".".join(str(part) for part in first.get("loc", ()))
    log.info("rejected invalid_request: %s", errors, extra={"reason": "invalid_request"})
    _count(request, "invalid_request")
    message = f"invalid {where}: {first.get('msg', 'invalid value')}" if where else "invalid"
    return error_response(422, "invalid_request", message)


async def unexpected_error_response(request: Request, exc: Exception) -> Response:
    """The safety net: the traceback goes to the log, never to the client."""
    log.error("unhandled %s", type(exc).__name__, exc_info=exc)
    _count(request, "internal_error")
    return error_response(500, "internal_error", "internal error")


def _count(request: Request, reason: str) -> None:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.rejections.labels(reason=reason).inc()


def install_error_handlers(app: FastAPI, retry_after_seconds: int) -> None:
    """Map every exception to the short JSON error; the one place statuses are decided."""

    async def on_service_error(request: Request, exc: ServiceError) -> Response:
        return service_error_response(request, exc, retry_after_seconds)

    async def on_validation_error(request: Request, exc: RequestValidationError) -> Response:
        return validation_error_response(request, exc.errors())

    async def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
        reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        _count(request, reason)
        response = error_response(exc.status_code, reason, reason.replace("_", " "))
        if exc.headers:
            response.headers.update(exc.headers)
        if exc.status_code == 405:
            # Starlette names only the first route whose path matched; a path can have several.
            response.headers["Allow"] = allowed_methods(request)
        return response

    app.add_exception_handler(ServiceError, on_service_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, unexpected_error_response)
