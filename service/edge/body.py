"""The first pipeline stage: read the request body, refusing it once it is too big.

The limit is enforced while the body streams in: a declared Content-Length over
the limit is refused before a byte is read, and a chunked or lying body is cut
off as soon as the running total passes the limit. A slow body is cut off after
a deadline so that it cannot hold a worker indefinitely, and, once a grace period
has passed, as soon as it falls behind a minimum transfer rate (``BodyPace``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

from starlette.requests import ClientDisconnect, Request

from service.edge.multipart import read_file_part
from service.errors import (
    BodyReadTimeout,
    BodyTooLarge,
    ClientDisconnected,
    EmptyBody,
    Overloaded,
    body_limit_message,
)
from service.sanitize.upload import Upload

# Multipart framing (boundaries, part headers, small fields) on top of the file itself.
MULTIPART_SLACK_BYTES = 64 * 1024


class BodyBudget:
    """Bytes of request bodies held at once, over every connection.

    Bodies are read before admission (so that a slow one holds nothing shared), which
    makes their memory a shared resource of its own: each request takes what actually
    arrived, as it arrives, and gives it back when it finishes.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def reserve(self) -> Reservation:
        return Reservation(self)


class Reservation:
    def __init__(self, budget: BodyBudget) -> None:
        self.budget = budget
        self.held = 0

    def take(self, size: int) -> None:
        if self.budget.used + size > self.budget.limit:
            raise Overloaded(f"body buffers full ({self.budget.used} of {self.budget.limit} bytes)")
        self.budget.used += size
        self.held += size

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.budget.used -= self.held
        self.held = 0


@dataclass
class BodyPace:
    """When the body read must end: ``timeout_seconds`` after it starts at the latest, and
    from ``grace_seconds`` on, whenever fewer than ``min_rate`` bytes per second (counted
    from the start, after the grace period) have arrived."""

    timeout_seconds: float
    min_rate: float = 0.0
    grace_seconds: float = 0.0
    started: float = field(default=0.0, init=False)

    def start(self) -> float:
        self.started = asyncio.get_running_loop().time()
        return self.due(0)

    def due(self, received: int) -> float:
        last = self.started + self.timeout_seconds
        if self.min_rate <= 0:
            return last
        return min(last, self.started + self.grace_seconds + received / self.min_rate)


async def paced(
    chunks: AsyncIterator[bytes], window: asyncio.Timeout, pace: BodyPace
) -> AsyncIterator[bytes]:
    """Pass the chunks through, moving ``window``'s deadline on as bytes arrive."""
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        window.reschedule(pace.due(received))
        yield chunk


def declared_length(request: Request) -> int | None:
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None  # the server would have refused it; the running count still applies


async def bounded_chunks(
    request: Request, limit: int, reservation: Reservation | None = None
) -> AsyncIterator[bytes]:
    """Yield the body's chunks, raising ``BodyTooLarge`` once more than ``limit`` arrived
    (and ``Overloaded`` when ``reservation``'s budget cannot hold the next chunk)."""
    length = declared_length(request)
    if length is not None and length > limit:
        raise BodyTooLarge(
            f"Content-Length {length} exceeds the limit of {limit} bytes",
            message=body_limit_message(limit),
        )
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise BodyTooLarge(
                    f"body passed the limit of {limit} bytes while streaming",
                    message=body_limit_message(limit),
                )
            if reservation is not None:
                reservation.take(len(chunk))
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
    ``min_rate`` bytes per second or faster once ``grace_seconds`` have passed."""
    pace = BodyPace(timeout_seconds, min_rate, grace_seconds)
    parts: list[bytes] = []
    try:
        async with asyncio.timeout_at(pace.start()) as window:
            async for chunk in paced(bounded_chunks(request, limit, reservation), window, pace):
                parts.append(chunk)
    except TimeoutError:
        raise BodyReadTimeout(_too_slow(pace, sum(map(len, parts)))) from None
    return b"".join(parts)


def _too_slow(pace: BodyPace, received: int) -> str:
    return (
        f"body not received in time: {received} bytes in "
        f"{asyncio.get_running_loop().time() - pace.started:.1f} s (limit "
        f"{pace.timeout_seconds} s, minimum {pace.min_rate:g} B/s after {pace.grace_seconds} s)"
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
) -> Upload:
    """Read an image sent either as the raw body or as the ``file`` part of a form."""
    started = time.perf_counter()
    pace = BodyPace(timeout_seconds, min_rate, grace_seconds)
    if is_multipart(request):
        upload = await _read_multipart(request, limit, pace, reservation)
    else:
        data = await read_bounded(
            request,
            limit,
            timeout_seconds,
            min_rate=min_rate,
            grace_seconds=grace_seconds,
            reservation=reservation,
        )
        upload = Upload(data, request.headers.get("content-type", ""), "raw")
    if not upload.data:
        raise EmptyBody(f"zero-byte image ({upload.via})")
    return replace(upload, read_seconds=time.perf_counter() - started)


async def _read_multipart(
    request: Request, limit: int, pace: BodyPace, reservation: Reservation | None
) -> Upload:
    chunks = bounded_chunks(request, limit + MULTIPART_SLACK_BYTES, reservation)
    try:
        async with asyncio.timeout_at(pace.start()) as window:
            content_type = request.headers["content-type"]
            data, declared = await read_file_part(content_type, paced(chunks, window, pace), limit)
    except TimeoutError:
        raise BodyReadTimeout(
            f"multipart body not received in time (limit {pace.timeout_seconds} s, "
            f"minimum {pace.min_rate:g} B/s after {pace.grace_seconds} s)"
        ) from None
    return Upload(data, declared, "multipart")
