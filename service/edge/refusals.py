"""The connection layer's own answers, written as bytes: overload and refusals.

Every one carries the service's JSON error body (``service.errors.error_body``) and
a fresh request id, like the app's answers, but is built without a request cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from service.errors import CONNECTION_REFUSALS, Overloaded, error_body
from service.logs import new_request_id


def overloaded_app(retry_after: int, on_refusal: Callable[[str], None]) -> Any:
    """A minimal ASGI app answering 503 ``overloaded`` (JSON, keep-alive) without reading."""
    headers = [(b"content-type", b"application/json"), (b"retry-after", b"%d" % retry_after)]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        on_refusal("overloaded")
        request_id = new_request_id(None).encode("ascii")
        body = _OVERLOADED_BODY % request_id
        extra = [(b"content-length", b"%d" % len(body)), (b"x-request-id", request_id)]
        await send({"type": "http.response.start", "status": 503, "headers": headers + extra})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return app


def overloaded_bytes(retry_after: int) -> bytes:
    """The 503 ``overloaded`` response, keep-alive, as ``overloaded_app`` sends it."""
    request_id = new_request_id(None).encode("ascii")
    body = _OVERLOADED_BODY % request_id
    return _OVERLOADED_HEAD % (retry_after, len(body), request_id) + body


# Built once from the one error-body encoding, with a slot for each answer's request id.
_OVERLOADED_BODY = error_body(Overloaded.message, Overloaded.reason, "%s")
_OVERLOADED_HEAD = (
    STATUS_LINE[503] + b"content-type: application/json\r\nretry-after: %d\r\n"
    b"content-length: %d\r\nx-request-id: %s\r\n\r\n"
)


def refusal_bytes(reason: str, retry_after: int | None = None) -> bytes:
    """A complete HTTP/1.1 response carrying the JSON error, closing the connection."""
    status, message = CONNECTION_REFUSALS[reason]
    request_id = new_request_id(None)
    body = error_body(message, reason, request_id)
    head = [
        STATUS_LINE[status],
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"x-request-id: " + request_id.encode("ascii") + b"\r\n",
        b"connection: close\r\n",
    ]
    if retry_after is not None:
        head.append(b"retry-after: %d\r\n" % retry_after)
    return b"".join([*head, b"\r\n", body])
