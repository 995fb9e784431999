"""The first pipeline stage: read the request body, refusing it once it is too big.

The limit is enforced while the body streams in: a declared Content-Length over
the limit is refused before a byte is read, and a chunked or lying body is cut
off as soon as the running total passes the limit. A slow body is cut off after
a deadline so that it cannot hold a worker indefinitely, and, once a grace period
has passed, as soon as it falls behind the rate it needs (``BodyPace``). Bodies held
at once are bounded in all and per client (``BodyBudget``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from starlette.requests import ClientDisconnect, Request

from service.edge.clients import client_address
from service.edge.connection import request_arrived
from service.edge.multipart import form_file
from service.errors import (
    BodyReadTimeout,
    BodyTooLarge,
    ClientBodyLimit,
    ClientDisconnected,
    EmptyBody,
    Overloaded,
    body_limit_message,
)
from service.sanitize.upload import Upload

_NO_TIMER = contextlib.nullcontext()
# Multipart framing (boundaries, part headers, small fields) on top of the file itself.
MULTIPART_SLACK_BYTES = 64 * 1024


class BodyBudget:
    """Bytes of request bodies held at once, over every connection and per client.

    Bodies are read before admission (so that a slow one holds nothing shared), which
    makes their memory a shared resource of its own: each request takes what actually
    arrived, as it arrives, and gives it back when it finishes. Each client (source
    address) may also hold at most ``per_client_limit`` bytes of bodies in flight,
    counted as what each body declared (or what arrived, when more did): a client that
    opens many slow uploads reaches its own limit long before the shared one, and a
    client with nothing in flight may always start one body.
    """

    def __init__(self, limit: int, per_client_limit: int = 0) -> None:
        self.limit = limit
        self.per_client_limit = per_client_limit
        self.used = 0
        self.by_client: dict[str, int] = {}

    def reserve(self, client: str = "") -> Reservation:
        return Reservation(self, client)


class Reservation:
    def __init__(self, budget: BodyBudget, client: str) -> None:
        self.budget = budget
        self.client = client
        self.held = 0  # bytes arrived, against the shared limit
        self.claimed = 0  # bytes declared or arrived, against the client's limit

    def claim(self, size: int) -> None:
        """Count a body of ``size`` bytes (declared, or arrived so far) against the client."""
        if size <= self.claimed:
            return
        budget, limit = self.budget, self.budget.per_client_limit
        held = budget.by_client.get(self.client, 0)
        others = held - self.claimed
        if limit and others > 0 and others + size > limit:
            raise ClientBodyLimit(
                f"client {self.client} holds {others} body bytes; {size} more pass {limit}",
                message="this client's request bodies in flight are at their limit "
                f"({limit} bytes), retry later",
            )
        budget.by_client[self.client] = others + size
        self.claimed = size

    def take(self, size: int) -> None:
        if self.budget.used + size > self.budget.limit:
            raise Overloaded(f"body buffers full ({self.budget.used} of {self.budget.limit} bytes)")
        self.budget.used += size
        self.held += size
        self.claim(self.held)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc: object) -> None:
        budget = self.budget
        budget.used -= self.held
        self.held = 0
        left = budget.by_client.get(self.client, 0) - self.claimed
        if left > 0:
            budget.by_client[self.client] = left
        else:
            budget.by_client.pop(self.client, None)
        self.claimed = 0


@dataclass
class BodyPace:
    """When the body read must end.

    At the latest ``timeout_seconds`` after it starts. From ``grace_seconds`` on, the
    bytes that arrived (counted from the start) must keep up with ``rate``: the floor
    ``min_rate``, or faster for a declared length that could not arrive before the
    timeout at the floor. So the deadline of a whole body grows with its declared length
    (``grace + declared / min_rate``) only as far as the timeout, and a client announcing
    5 MB and sending just above the floor is cut off once the grace period is over, not
    at the timeout.
    """

    timeout_seconds: float
    min_rate: float = 0.0
    grace_seconds: float = 0.0
    declared: int | None = None
    started: float = field(default=0.0, init=False)

    @property
    def rate(self) -> float:
        if self.min_rate <= 0:
            return 0.0
        window = self.timeout_seconds - self.grace_seconds
        if not self.declared or window <= 0:
            return self.min_rate
        return max(self.min_rate, self.declared / window)

    def start(self) -> float:
        self.started = asyncio.get_running_loop().time()
        return self.due(0)

    def due(self, received: int) -> float:
        last = self.started + self.timeout_seconds
        rate = self.rate
        if rate <= 0:
            return last
        return min(last, self.started + self.grace_seconds + received / rate)


def declared_length(request: Request) -> int | None:
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None  # the server would have refused it; the running count still applies


class _Intake:
    """The checks every arriving chunk of one body passes: the size limit (a declared
    Content-Length over it is refused before a byte is read) and the body budget."""

    def __init__(self, length: int | None, limit: int, reservation: Reservation | None) -> None:
        """``length``: the request's declared Content-Length (``declared_length``)."""
        if length is not None and length > limit:
            raise BodyTooLarge(
                f"Content-Length {length} exceeds the limit of {limit} bytes",
                message=body_limit_message(limit),
            )
        if length is not None and reservation is not None:
            reservation.claim(length)
        self.limit = limit
        self.reservation = reservation
        self.received = 0

    def take(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.received > self.limit:
            raise BodyTooLarge(
                f"body passed the limit of {self.limit} bytes while streaming",
                message=body_limit_message(self.limit),
            )
        if self.reservation is not None:
            self.reservation.take(len(chunk))


async def bounded_chunks(
    request: Request, limit: int, reservation: Reservation | None = None
) -> AsyncIterator[bytes]:
    """Yield the body's chunks, raising ``BodyTooLarge`` once more than ``limit`` arrived
    (and ``Overloaded`` when ``reservation``'s budget cannot hold the next chunk)."""
    intake = _Intake(declared_length(request), limit, reservation)
    try:
        async for chunk in request.stream():
            intake.take(chunk)
            yield chunk
    except ClientDisconnect:
        raise ClientDisconnected("client disconnected while sending the body") from None


async def read_bounded(
    request: Request,
    limit: int,
    timeout_seconds: float,
    *,
    min_rate: float = 0.0,
    grace_seconds: float = 0.0,
    reservation: Reservation | None = None,
) -> bytes:
    """Read the whole body (at most ``limit`` bytes) within ``timeout_seconds``, and at
    ``min_rate`` bytes per second or faster once ``grace_seconds`` have passed.

    The ASGI messages are read here directly, not through ``bounded_chunks``: the same
    checks, without its generator (and Starlette's) per chunk, which cost more than the
    rest of reading a small body that arrives at once."""
    length = declared_length(request)
    pace = BodyPace(timeout_seconds, min_rate, grace_seconds, length)
    intake = _Intake(length, limit, reservation)
    parts: list[bytes] = []
    receive = request.receive
    # A small body arrives with its head: read at once, it needs no timer.
    timer = _NO_TIMER if request_arrived(receive) else asyncio.timeout_at(pace.start())
    try:
        async with timer as window:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnected("client disconnected while sending the body")
                chunk = message.get("body", b"")
                if chunk:
                    intake.take(chunk)
                    parts.append(chunk)
                if not message.get("more_body", False):
                    break
                window.reschedule(pace.due(intake.received))
    except TimeoutError:
        raise BodyReadTimeout(_too_slow(pace, intake.received)) from None
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _too_slow(pace: BodyPace, received: int) -> str:
    return (
        f"body not received in time: {received} bytes in "
        f"{asyncio.get_running_loop().time() - pace.started:.1f} s (limit "
        f"{pace.timeout_seconds} s, at least {pace.rate:.0f} B/s after {pace.grace_seconds} s)"
    )


def is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").lower().startswith("multipart/form-data")


async def read_image_upload(
    request: Request,
    limit: int,
    timeout_seconds: float,
    *,
    min_rate: float = 0.0,
    grace_seconds: float = 0.0,
    reservation: Reservation | None = None,
    anonymous: bool = True,
) -> Upload:
    """Read an image sent either as the raw body or as the ``file`` part of a form;
    ``anonymous``: sent without the admin token (``Upload.anonymous``)."""
    started = time.perf_counter()
    multipart = is_multipart(request)
    # A form is read whole too: the file is most of it, and held in memory either way.
    body = await read_bounded(
        request,
        limit + MULTIPART_SLACK_BYTES if multipart else limit,
        timeout_seconds,
        min_rate=min_rate,
        grace_seconds=grace_seconds,
        reservation=reservation,
    )
    return _image_upload(request, body, multipart, limit, started, anonymous)


def image_upload_arrived(
    request: Request,
    body: bytes,
    limit: int,
    *,
    reservation: Reservation | None = None,
    anonymous: bool = True,
) -> Upload:
    """``read_image_upload`` for a body that has all arrived (an express request,
    ``service.edge.express``): the same limits and body budget, nothing to wait for."""
    started = time.perf_counter()
    multipart = is_multipart(request)
    bound = limit + MULTIPART_SLACK_BYTES if multipart else limit
    _Intake(declared_length(request), bound, reservation).take(body)
    return _image_upload(request, body, multipart, limit, started, anonymous)


def _image_upload(
    request: Request, body: bytes, multipart: bool, limit: int, started: float, anonymous: bool
) -> Upload:
    """The image of a body read whole: the body itself, or its form's ``file`` part."""
    content_type = request.headers.get("content-type", "")
    if multipart:
        data, declared_type, via = *form_file(content_type, body, limit), "multipart"
    else:
        data, declared_type, via = body, content_type, "raw"
    if not data:
        raise EmptyBody(f"zero-byte image ({via})")
    seconds = time.perf_counter() - started
    client = client_address(request.scope)
    return Upload(data, declared_type, via, seconds, client, anonymous)
