"""The HTTP/1.1 connection layer: uvicorn's httptools protocol with the limits it lacks.

uvicorn (0.54, httptools) bounds none of these on its own: the size or number of
request headers (httptools buffers a header of any length), the time a connection
may take to send a complete request head (its keep-alive timer is cancelled by the
first byte, and nothing is armed before the first request), or the number of open
connections (``limit_concurrency`` answers a plain-text 503 only once a request
head has arrived, so idle sockets still pile up). This subclass adds them, at the
point where the bytes arrive, and answers every refusal with the service's JSON
error body:

* head bytes (request line and headers) over ``max_header_bytes``: 431
  ``headers_too_large``, before the parser sees the excess;
* more than ``max_header_count`` headers: 431 ``too_many_headers``;
* no complete request head within ``header_timeout_seconds`` of connecting or of
  the previous response: closed (408 ``request_header_timeout`` when part of a
  head had arrived, silently when nothing had);
* a new connection beyond ``max_connections``: the oldest connection that is
  waiting for a request head is closed to make room; when every connection is in
  the middle of a request, the newcomer gets 503 ``too_many_connections``;
* anything the parser refuses: 400 ``bad_http_request``;
* while the service is overloaded (``shed`` says so for the request's path), an
  inference request gets the 503 ``overloaded`` answer straight from here, with
  ``Retry-After``, written the moment its head is parsed, with no request cycle, task,
  routing, middleware or logging: under overload the refusals must cost next to
  nothing, or they eat the capacity of the requests being served. The connection stays
  open and the body is discarded as it arrives (closed after ``Expect: 100-continue``,
  whose body will not come); a request pipelined behind one still being answered is
  refused through a minimal cycle instead, so that responses stay in order.

Everything else (keep-alive, pipelining, flow control, the request cycle) is
uvicorn's own code, so the hot path stays what it was.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from service.errors import CONNECTION_REFUSALS, Overloaded, error_body
from service.logs import new_request_id

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int
    max_header_bytes: int
    max_header_count: int
    header_timeout_seconds: float
    retry_after_seconds: int = 1
    # Told each refusal's reason code (the service counts them in its metrics).
    on_refusal: Callable[[str], None] = lambda reason: None
    # Given a request's method and raw target, true when it should be refused as overloaded.
    shed: Callable[[str, bytes], bool] = lambda method, target: False


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


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedHttpProtocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` bound to these limits."""
    attributes = {
        "limits": limits,
        "shed_app": staticmethod(overloaded_app(limits.retry_after_seconds, limits.on_refusal)),
    }
    return type("BoundGuardedHttpProtocol", (GuardedHttpProtocol,), attributes)


class GuardedHttpProtocol(HttpToolsProtocol):
    limits: ConnectionLimits
    shed_app: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.awaiting_head = True  # between requests, or part-way through a request head
        self.head_bytes = 0
        self.header_count = 0
        self.heads_completed = 0
        self.idle_since = 0.0
        self._head_timer: Any = None
        self._refusal: str | None = None
        self._shedding = False  # answered 503 without a cycle; discarding the body

    # --- connections ----------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections and not self._evict_one():
            self.refuse("too_many_connections")
            return
        self._start_waiting_for_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _evict_one(self) -> bool:
        """Close the connection that has waited longest for a request head, if any does."""
        waiting = [
            other
            for other in self.connections
            if other is not self
            and getattr(other, "awaiting_head", False)
            and (other.cycle is None or other.cycle.response_complete)  # never a request
            and not other.transport.is_closing()
        ]
        if not waiting:
            return False
        # Sockets that have sent nothing go first, then the slowest partial heads.
        oldest = min(waiting, key=lambda other: (other.head_bytes > 0, other.idle_since))
        oldest.close_waiting("evicted for a new connection")
        return True

    def close_waiting(self, why: str) -> None:
        """Close a connection that is waiting for a request head."""
        log.debug("closing a connection waiting for a request head: %s", why)
        if self.head_bytes > 0:
            self.refuse("request_header_timeout")
        else:
            self._cancel_head_timer()
            self.transport.close()

    # --- the request head -----------------------------------------------------------------

    def _start_waiting_for_head(self) -> None:
        self.awaiting_head = True
        self.head_bytes = 0
        self.header_count = 0
        self.idle_since = self.loop.time()
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(
            self.limits.header_timeout_seconds, self._head_timed_out
        )

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        busy = self.cycle is not None and not self.cycle.response_complete
        if self.awaiting_head and not busy and not self.transport.is_closing():
            self.close_waiting("no complete request head in time")

    def data_received(self, data: bytes) -> None:
        if not self.awaiting_head:
            super().data_received(data)
            return
        room = self.limits.max_header_bytes - self.head_bytes
        if len(data) <= room:
            self.head_bytes += len(data)
            super().data_received(data)
            return
        # Only part of this chunk may still be head; the parser decides where the head ends.
        self.head_bytes += room
        heads = self.heads_completed
        super().data_received(data[:room])
        if self.transport.is_closing():
            return
        if self.heads_completed == heads:
            self.refuse("headers_too_large")
            return
        self.data_received(data[room:])  # the rest: a body, or the next request's head

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.header_count = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_count += 1
        if self.header_count > self.limits.max_header_count:
            self._refusal = "too_many_headers"
            raise ValueError("too many header fields")  # the parser stops; see send_400_response
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.awaiting_head = False
        self.heads_completed += 1
        self._cancel_head_timer()
        if not self.limits.shed(self.parser.get_method().decode("ascii", "replace"), self.url):
            super().on_headers_complete()
            return
        if (self.cycle is None or self.cycle.response_complete) and not self.pipeline:
            self._shed_directly()
            return
        # Behind a pipelined request still being answered: in order, through a cycle.
        app, self.app = self.app, self.shed_app  # uvicorn starts the cycle with self.app
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def _shed_directly(self) -> None:
        """The 503 ``overloaded`` answer written at once, with no request cycle, task or app:
        the cheapest answer there is, for the moments when answering costs most. The body
        that follows is discarded as it arrives (``on_body``)."""
        self._shedding = True
        self.transport.write(overloaded_bytes(self.limits.retry_after_seconds))
        self.limits.on_refusal("overloaded")
        # A client told to wait (Expect: 100-continue) sends no body now: the stream cannot be
        # resynchronised, so that connection closes, as one the client asked to close does.
        if not self.parser.should_keep_alive() or self.expect_100_continue:
            self.transport.close()

    def on_body(self, body: bytes) -> None:
        if not self._shedding:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._shedding:
            super().on_message_complete()
        # The next bytes belong to the next request's head; its timer starts once this
        # request's response is complete (see on_response_complete).
        self.awaiting_head = True
        self.head_bytes = 0
        self.idle_since = self.loop.time()
        if self._shedding:  # answered already: wait for the next head now
            self._shedding = False
            if not self.transport.is_closing():
                self._start_waiting_for_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.awaiting_head and not self.transport.is_closing():
            self._start_waiting_for_head_keeping_count()

    def _start_waiting_for_head_keeping_count(self) -> None:
        head_bytes = self.head_bytes
        self._start_waiting_for_head()
        self.head_bytes = head_bytes  # bytes of a pipelined head already counted

    # --- refusals -------------------------------------------------------------------------

    def send_400_response(self, msg: str) -> None:  # called by uvicorn on a parser error
        self.refuse(self._refusal or "bad_http_request")

    def refuse(self, reason: str) -> None:
        self._cancel_head_timer()
        self.awaiting_head = False
        if self.transport.is_closing():
            return
        retry = self.limits.retry_after_seconds if reason == "too_many_connections" else None
        self.transport.write(refusal_bytes(reason, retry))
        self.transport.close()
        self.limits.on_refusal(reason)
        log.debug("refused a connection: %s", reason, extra={"reason": reason})
