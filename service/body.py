"""The first pipeline stage: read the request body, refusing it once it is too big.

The limit is enforced while the body streams in: a declared Content-Length over
the limit is refused before a byte is read, and a chunked or lying body is cut
off as soon as the running total passes the limit. A slow body is cut off after
a deadline so that it cannot hold a worker indefinitely.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.requests import ClientDisconnect, Request

from service.errors import BodyReadTimeout, BodyTooLarge, ClientDisconnected, EmptyBody
from service.multipart import read_file_part

# Multipart framing (boundaries, part headers, small fields) on top of the file itself.
MULTIPART_SLACK_BYTES = 64 * 1024


@dataclass(frozen=True)
class Upload:
    """Image bytes as received; ``declared_type`` is reported back, never trusted."""

    data: bytes
    declared_type: str
    via: str  # "raw" or "multipart"


def declared_length(request: Request) -> int | None:
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None  # the server would have refused it; the running count still applies


async def bounded_chunks(request: Request, limit: int) -> AsyncIterator[bytes]:
    """Yield the body's chunks, raising ``BodyTooLarge`` once more than ``limit`` arrived."""
    length = declared_length(request)
    if length is not None and length > limit:
        raise BodyTooLarge(f"Content-Length {length} exceeds the limit of {limit} bytes")
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise BodyTooLarge(f"body passed the limit of {limit} bytes while streaming")
            yield chunk
    except ClientDisconnect:
        raise ClientDisconnected("client disconnected while sending the body") from None


async def read_bounded(request: Request, limit: int, timeout_seconds: float) -> bytes:
    """Read the whole body (at most ``limit`` bytes) within ``timeout_seconds``."""
    parts: list[bytes] = []
    try:
        async with asyncio.timeout(timeout_seconds):
            async for chunk in bounded_chunks(request, limit):
                parts.append(chunk)
    except TimeoutError:
        raise BodyReadTimeout(f"body not received within {timeout_seconds} s") from None
    return b"".join(parts)


def is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").lower().startswith("multipart/form-data")


async def read_image_upload(request: Request, limit: int, timeout_seconds: float) -> Upload:
    """Read an image sent either as the raw body or as the ``file`` part of a form."""
    if is_multipart(request):
        upload = await _read_multipart(request, limit, timeout_seconds)
    else:
        data = await read_bounded(request, limit, timeout_seconds)
        upload = Upload(data, request.headers.get("content-type", ""), "raw")
    if not upload.data:
        raise EmptyBody(f"zero-byte image ({upload.via})")
    return upload


async def _read_multipart(request: Request, limit: int, timeout_seconds: float) -> Upload:
    chunks = bounded_chunks(request, limit + MULTIPART_SLACK_BYTES)
    try:
        async with asyncio.timeout(timeout_seconds):
            data, declared = await read_file_part(request.headers["content-type"], chunks, limit)
    except TimeoutError:
        raise BodyReadTimeout(f"multipart body not received within {timeout_seconds} s") from None
    return Upload(data, declared, "multipart")
