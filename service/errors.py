"""The service's exceptions and the one place that turns them into responses.

Every rejection a client can cause is a ``ServiceError`` subclass with a fixed
status and a stable ``reason`` code. Clients get ``{"error", "reason",
"request_id"}``; the detail goes to the log under the same request id. The
``error`` key doubles as the Open Inference Protocol's error field.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.logs import current_request_id
from service.protocol import PROTOCOL_REFUSALS

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """Base: ``message`` is what the client reads, ``detail`` what the log reads."""

    status: int = 500
    reason: str = "internal_error"
    message: str = "internal error"
    retryable: bool = False  # answered with Retry-After
    headers: dict[str, str] = {}  # fixed extra response headers

    def __init__(self, detail: str = "", *, message: str | None = None) -> None:
        super().__init__(detail or self.message)
        self.detail = detail or self.message
        if message is not None:
            self.message = message


class EmptyBody(ServiceError):
    status, reason, message = 400, "empty_body", "the request has no image data"


class BadMultipart(ServiceError):
    status, reason, message = 400, "bad_multipart", "the multipart body could not be parsed"


class MissingFile(ServiceError):
    status, reason, message = 400, "missing_file", "the multipart body has no 'file' upload"


class CorruptImage(ServiceError):
    status, reason, message = 400, "corrupt_image", "the image is truncated or corrupt"


class BadChecksum(ServiceError):
    status, reason, message = 400, "bad_checksum", "a chunk of the image fails its checksum"


class InconsistentFrame(ServiceError):
    status, reason = 400, "inconsistent_frame"
    message = "the image's frame header disagrees with its data"


class TrailingData(ServiceError):
    status, reason, message = 400, "trailing_data", "the upload has data after the image's end"


class InvalidJson(ServiceError):
    status, reason, message = 400, "invalid_json", "the body is not valid JSON"


class BadContentEncoding(ServiceError):
    status, reason = 400, "bad_content_encoding"
    message = "the body does not decompress as its Content-Encoding says"


class ClientDisconnected(ServiceError):
    status, reason, message = 400, "client_disconnected", "the client went away mid-body"


class Unauthorized(ServiceError):
    status, reason, message = 401, "unauthorized", "an admin bearer token is required"
    headers = {"WWW-Authenticate": "Bearer"}


class Forbidden(ServiceError):
    status, reason, message = 403, "forbidden", "the admin token is not valid"


class BodyReadTimeout(ServiceError):
    status, reason, message = 408, "body_read_timeout", "the request body arrived too slowly"


class UnknownModel(ServiceError):
    status, reason, message = 404, "unknown_model", "no model of that name is loaded"


class UnknownJob(ServiceError):
    status, reason, message = 404, "unknown_job", "no robustness-check job has that id"


class JobFinished(ServiceError):
    status, reason, message = 409, "job_finished", "the job has already finished"


class BodyTooLarge(ServiceError):
    status, reason, message = 413, "body_too_large", "the request body exceeds the size limit"


class ImageTooLarge(ServiceError):
    status, reason, message = 413, "image_too_large", "the image dimensions exceed the limit"


class TooManyScans(ServiceError):
    status, reason, message = 413, "too_many_scans", "the JPEG has more scans than allowed"


class DecodeBudgetExceeded(ServiceError):
    status, reason = 413, "decode_budget_exceeded"
    message = "decoding the image exceeds the time or memory budget"


class UnsupportedFormat(ServiceError):
    status, reason = 415, "unsupported_format"
    message = "the image format is not one of PNG, JPEG, BMP, GIF, WebP"


class UnsupportedContentEncoding(ServiceError):
    status, reason = 415, "unsupported_content_encoding"
    message = "the Content-Encoding is not one of identity, gzip, deflate"


class InvalidTensor(ServiceError):
    status, reason, message = 422, "invalid_tensor", "the input tensor is invalid"


class InvalidRequest(ServiceError):
    status, reason, message = 422, "invalid_request", "the request is invalid"


class InvalidJobRequest(ServiceError):
    status, reason, message = 422, "invalid_job_request", "the robustness-check request is invalid"


class InvalidSamples(ServiceError):
    status, reason, message = 422, "invalid_samples", "the uploaded sample set is invalid"


class JobQueueFull(ServiceError):
    status, reason, message = 429, "job_queue_full", "the robustness-check queue is full"
    retryable = True


class NotReady(ServiceError):
    status, reason, message = 503, "not_ready", "the model is still loading"
    retryable = True


class JobsUnavailable(ServiceError):
    status, reason, message = 503, "jobs_unavailable", "the robustness-check jobs are unavailable"
    retryable = True


class Overloaded(ServiceError):
    status, reason, message = 503, "overloaded", "too many requests in flight, retry later"
    retryable = True


class QueueFull(ServiceError):
    status, reason, message = 503, "queue_full", "the inference queue is full, retry later"
    retryable = True


class InferenceTimeout(ServiceError):
    status, reason, message = 504, "timeout", "the request did not finish in time"


REJECTION_TYPES: tuple[type[ServiceError], ...] = (
    EmptyBody,
    BadMultipart,
    MissingFile,
    CorruptImage,
    BadChecksum,
    InconsistentFrame,
    TrailingData,
    InvalidJson,
    BadContentEncoding,
    ClientDisconnected,
    Unauthorized,
    Forbidden,
    BodyReadTimeout,
    UnknownModel,
    UnknownJob,
    JobFinished,
    BodyTooLarge,
    ImageTooLarge,
    TooManyScans,
    DecodeBudgetExceeded,
    UnsupportedFormat,
    UnsupportedContentEncoding,
    InvalidTensor,
    InvalidRequest,
    InvalidJobRequest,
    InvalidSamples,
    JobQueueFull,
    NotReady,
    JobsUnavailable,
    Overloaded,
    QueueFull,
    InferenceTimeout,
)
# Every reason a rejection can carry, known up front so the metric starts at zero.
REJECTION_REASONS: tuple[str, ...] = (
    *(t.reason for t in REJECTION_TYPES),
    *PROTOCOL_REFUSALS,  # refused below the app, by service.protocol
    "not_found",
    "method_not_allowed",
    "http_error",
    "internal_error",
)


def error_response(
    status: int,
    reason: str,
    message: str,
    retry_after: int | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    headers = dict(headers or {})
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    body = {"error": message, "reason": reason, "request_id": current_request_id()}
    return JSONResponse(body, status_code=status, headers=headers)


def allowed_methods(request: Request) -> str:
    """Every method some route answers on this request's path, for a 405's ``Allow``.

    ``app.state.route_methods`` is the (path pattern, methods) table ``include_routers``
    builds; Starlette's own ``Allow`` names only the first route whose path matched."""
    path = request.scope.get("path", "")
    table = getattr(request.app.state, "route_methods", ())
    methods = {m for pattern, allowed in table if pattern.match(path) for m in allowed}
    return ", ".join(sorted(methods))


def service_error_response(request: Request, exc: ServiceError, retry_after: int) -> JSONResponse:
    """A ``ServiceError`` as the client sees it: logged, counted, answered in JSON."""
    log.info("rejected %s: %s", exc.reason, exc.detail, extra={"reason": exc.reason})
    _count(request, exc.reason)
    retry = retry_after if exc.retryable else None
    return error_response(exc.status, exc.reason, exc.message, retry, exc.headers)


def validation_error_response(request: Request, errors: Sequence[Any]) -> JSONResponse:
    """Invalid parameters (pydantic's error list, ``loc`` naming where) as a 422."""
    first = errors[0] if errors else {}
    where = ".".join(str(part) for part in first.get("loc", ()))
    log.info("rejected invalid_request: %s", errors, extra={"reason": "invalid_request"})
    _count(request, "invalid_request")
    message = f"invalid {where}: {first.get('msg', 'invalid value')}" if where else "invalid"
    return error_response(422, "invalid_request", message)


def _count(request: Request, reason: str) -> None:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.rejections.labels(reason=reason).inc()


def install_error_handlers(app: FastAPI, retry_after_seconds: int) -> None:
    """Map every exception to the short JSON error; the one place statuses are decided."""

    async def on_service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return service_error_response(request, exc, retry_after_seconds)

    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error_response(request, exc.errors())

    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        _count(request, reason)
        response = error_response(exc.status_code, reason, reason.replace("_", " "))
        if exc.headers:
            response.headers.update(exc.headers)
        if exc.status_code == 405:
            # Starlette names only the first route whose path matched; a path can have several.
            response.headers["Allow"] = allowed_methods(request)
        return response

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The safety net: the traceback goes to the log, never to the client.
        log.error("unhandled %s", type(exc).__name__, exc_info=exc)
        _count(request, "internal_error")
        return error_response(500, "internal_error", "internal error")

    app.add_exception_handler(ServiceError, on_service_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
