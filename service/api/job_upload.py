"""Read a robustness-check submission: JSON, or a form with the JSON and a sample set.

``application/json``: the request itself. ``multipart/form-data``: a ``request`` field
(the same JSON, at most 64 KiB; optional) and a ``samples`` file (the ``.npz``). Any
other part is refused. The form is parsed as it streams, in memory, within the same
bounded reader as every other body, so the upload limit holds before parsing ends.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request

from service.edge.body import MULTIPART_SLACK_BYTES, bounded_chunks, is_multipart, read_bounded
from service.edge.multipart import PartCollector, parse_multipart
from service.errors import BadMultipart, BodyReadTimeout, BodyTooLarge, EmptyBody, MissingFile

REQUEST_FIELD, SAMPLES_FIELD = "request", "samples"
MAX_REQUEST_BYTES = 64 * 1024


class _Parts(PartCollector):
    """Keeps the two expected parts, each within its own limit; refuses any other."""

    def __init__(self, samples_limit: int) -> None:
        super().__init__()
        self.limits = {REQUEST_FIELD: MAX_REQUEST_BYTES, SAMPLES_FIELD: samples_limit}
        self.values: dict[str, bytearray] = {}
        self._name = ""

    def start_part(self, options: dict[bytes, bytes], headers: dict[bytes, bytes]) -> None:
        name = options.get(b"name", b"").decode("latin-1")
        if name not in self.limits:
            raise BadMultipart(
                f"unexpected form part {name[:64]!r}",
                message="the form may hold only a 'request' field and a 'samples' file",
            )
        if name in self.values:
            raise BadMultipart(f"form part {name!r} twice", message=f"'{name}' appears twice")
        self._name = name
        self.values[name] = bytearray()

    def part_data(self, chunk: bytes) -> None:
        sink = self.values[self._name]
        if len(sink) + len(chunk) > self.limits[self._name]:
            limit = self.limits[self._name]
            raise BodyTooLarge(
                f"form part {self._name!r} over {limit} bytes",
                message=f"the form part {self._name!r} exceeds its limit of {limit} bytes",
            )
        sink += chunk


async def read_submission(
    request: Request, samples_limit: int, timeout_seconds: float
) -> tuple[bytes, bytes | None]:
    """The request JSON and the uploaded sample set (None when none was sent)."""
    if not is_multipart(request):
        limit = MAX_REQUEST_BYTES
        return await read_bounded(request, limit, timeout_seconds), None
    parts = _Parts(samples_limit)
    chunks = bounded_chunks(request, samples_limit + MAX_REQUEST_BYTES + MULTIPART_SLACK_BYTES)
    try:
        async with asyncio.timeout(timeout_seconds):
            await parse_multipart(request.headers["content-type"], chunks, parts)
    except TimeoutError:
        raise BodyReadTimeout(f"form not received within {timeout_seconds} s") from None
    if SAMPLES_FIELD not in parts.values:
        raise MissingFile("no samples part", message="the form has no 'samples' file")
    samples = bytes(parts.values[SAMPLES_FIELD])
    if not samples:
        raise EmptyBody("zero-byte samples file", message="the 'samples' file is empty")
    return bytes(parts.values.get(REQUEST_FIELD, b"")), samples
