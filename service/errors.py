"""The service's exceptions, reason codes and the JSON error body: no web framework here.

Every rejection a client can cause is a ``ServiceError`` subclass with a fixed
status and a stable ``reason`` code. Clients get ``{"error", "reason",
"request_id"}`` (``error_body``); the detail goes to the log under the same request
id. The ``error`` key doubles as the Open Inference Protocol's error field. The
handlers that turn these into responses live with the API
(``service.api.error_handlers``); this module is imported by the decode worker
process too, which must stay free of FastAPI, Starlette, uvicorn and torch.
"""

from __future__ import annotations

import json


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


class UnknownQueryParameter(ServiceError):
    status, reason = 400, "unknown_query_parameter"
    message = "the request names query parameters this route does not take"


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


class NoReport(ServiceError):
    status, reason, message = 409, "no_report", "the job has no report (yet)"


class NoPublishedReport(ServiceError):
    status, reason = 404, "no_published_report"
    message = "no published report was made on the model's weights"


class BodyTooLarge(ServiceError):
    status, reason, message = 413, "body_too_large", "the request body exceeds the size limit"


class ImageTooLarge(ServiceError):
    status, reason, message = 413, "image_too_large", "the image dimensions exceed the limit"


class TooManyScans(ServiceError):
    status, reason, message = 413, "too_many_scans", "the JPEG has more scans than allowed"


class DecodeBudgetExceeded(ServiceError):
    status, reason = 413, "decode_budget_exceeded"
    message = "decoding the image exceeds the time or memory budget"


class DecodeCostTooHigh(ServiceError):
    status, reason = 413, "decode_cost_too_high"
    message = "decoding the image would cost more than this client is allowed"


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


class ClientBodyLimit(ServiceError):
    status, reason = 429, "client_body_limit"
    message = "this client's request bodies in flight are at their limit, retry later"
    retryable = True


class ClientDecodeLimit(ServiceError):
    status, reason = 429, "client_decode_limit"
    message = "this client's decodes in flight are at their limit, retry later"
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
    UnknownQueryParameter,
    ClientDisconnected,
    Unauthorized,
    Forbidden,
    BodyReadTimeout,
    UnknownModel,
    UnknownJob,
    JobFinished,
    NoReport,
    NoPublishedReport,
    BodyTooLarge,
    ImageTooLarge,
    TooManyScans,
    DecodeBudgetExceeded,
    DecodeCostTooHigh,
    UnsupportedFormat,
    UnsupportedContentEncoding,
    InvalidTensor,
    InvalidRequest,
    InvalidJobRequest,
    InvalidSamples,
    JobQueueFull,
    ClientBodyLimit,
    ClientDecodeLimit,
    NotReady,
    JobsUnavailable,
    Overloaded,
    QueueFull,
    InferenceTimeout,
)
# Refused below the app, by the connection layer (``service.edge.connection``), before
# any request exists: reason -> (status, message).
CONNECTION_REFUSALS: dict[str, tuple[int, str]] = {
    "headers_too_large": (431, "the request head exceeds the size limit"),
    "too_many_headers": (431, "the request has too many header fields"),
    "request_header_timeout": (408, "the request head did not arrive in time"),
    "too_many_connections": (503, "too many open connections, retry later"),
    "client_connection_limit": (429, "this client has too many open connections, retry later"),
    "bad_http_request": (400, "the request is not valid HTTP/1.1"),
}
# Every reason a rejection can carry, known up front so the metric starts at zero.
REJECTION_REASONS: tuple[str, ...] = (
    *(t.reason for t in REJECTION_TYPES),
    *CONNECTION_REFUSALS,
    "not_found",
    "method_not_allowed",
    "http_error",
    "internal_error",
)


def error_body(message: str, reason: str, request_id: str | None) -> bytes:
    """The one encoding of the error body every refusal carries, at any layer."""
    body = {"error": message, "reason": reason, "request_id": request_id}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def body_limit_message(limit: int) -> str:
    """What a client reads when its body is over the limit: the limit itself."""
    return f"the request body exceeds the limit of {limit} bytes"
