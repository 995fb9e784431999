"""Express requests: a request that arrived whole, answered without an ASGI request cycle.

A small upload arrives with its head, in one read of the socket. Through ASGI it still
costs a request cycle, a task wrapper, the proxy-headers and app layers, the request
context middleware, Starlette's request and response objects and two messages each way:
on the CIFAR ResNet-20 path that was about a fifth of the event loop's time a request
(docs/service.md, "Express requests"). The app may name, for a request's method, target
and headers, an ``ExpressHandler`` instead (``ConnectionLimits.express``): the
connection (``service.edge.connection``) then collects the body as it is parsed and,
once the request has all arrived, hands it over as one ``ExpressRequest`` and writes the
``Answer`` the handler returns, exactly as uvicorn would write the same response.

Nothing else changes for the connection: keep-alive, pipelining (a request behind an
express one waits its turn, as behind any other), flow control, the head timer, the
limits. A request whose body has not all arrived by the end of the read that completed
its head goes the ordinary way after all, from where it stands (``promote``): the body
read's deadline, pace and limits then apply, as to any body still on its way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response
from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from service.errors import error_body
from service.logs import new_request_id


@dataclass(slots=True)
class ExpressRequest:
    """A request that has all arrived."""

    method: str
    target: bytes  # as sent: path and query
    headers: list[tuple[bytes, bytes]]  # names lower-cased, as ASGI has them
    client: tuple[str, int] | None
    body: bytes

    @property
    def path(self) -> bytes:
        return self.target.partition(b"?")[0]

    @property
    def query(self) -> bytes:
        return self.target.partition(b"?")[2]


@dataclass(slots=True)
class Answer:
    """A complete response: status, headers (with its content-length) and body."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    @classmethod
    def of(cls, response: Response) -> Answer:
        """A Starlette response's status, headers (a copy: they may be added to) and body."""
        return cls(response.status_code, list(response.raw_headers), bytes(response.body))


ExpressHandler = Callable[[ExpressRequest], Awaitable[Answer]]


class _NoEvent:
    """uvicorn's protocol sets its cycle's ``message_event`` when the connection is lost."""

    @staticmethod
    def set() -> None:
        pass


class ExpressCycle:
    """What the protocol holds as its ``cycle`` for an express request: the attributes
    uvicorn's protocol and the connection layer read from a request cycle."""

    message_event = _NoEvent()

    def __init__(
        self, handler: ExpressHandler, method: str, keep_alive: bool, previous: Any
    ) -> None:
        self.handler = handler
        self.method = method
        self.keep_alive = keep_alive
        self.previous = previous  # the cycle before: a promoted request starts from it
        self.chunks: list[bytes] = []
        self.more_body = True  # the body is still being parsed
        self.response_started = False
        self.response_complete = False
        self.disconnected = False

    def request(self, target: bytes, headers: list, client: Any) -> ExpressRequest:
        chunks = self.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.chunks = []
        return ExpressRequest(self.method, target, headers, client, body)


def answer_bytes(answer: Answer, default_headers: list[tuple[bytes, bytes]], close: bool) -> bytes:
    """The response as uvicorn's request cycle writes it: its status line, the server's
    default headers, the answer's, ``connection: close`` when the connection closes after
    it, and the body. (Names are written lower-cased; the handler's are already.)"""
    parts = [STATUS_LINE[answer.status]]
    for name, value in default_headers:
        parts += (name, b": ", value, b"\r\n")
    for name, value in answer.headers:
        parts += (name, b": ", value, b"\r\n")
    if close:
        parts.append(b"connection: close\r\n")
    parts += (b"\r\n", answer.body)
    return b"".join(parts)


def internal_error() -> Answer:
    """The 500 the service answers for an exception nothing else answered."""
    request_id = new_request_id(None)
    body = error_body("internal error", "internal_error", request_id)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        (b"x-request-id", request_id.encode("ascii")),
    ]
    return Answer(500, headers, body)
