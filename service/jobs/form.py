"""Read a robustness-check submission: JSON, or a form with the JSON and a sample set.

``application/json``: the request itself. ``multipart/form-data``: a ``request`` field
(the same JSON, at most 64 KiB; optional) and a ``samples`` file (the ``.npz``). Any
other part is refused. The form is parsed as it streams, in memory, within the same
bounded reader as every other body, so the upload limit holds before parsing ends.
"""

from __future__ import annotations

import asyncio

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from service.body import MULTIPART_SLACK_BYTES, bounded_chunks, is_multipart, read_bounded
from service.errors import BadMultipart, BodyReadTimeout, BodyTooLarge, EmptyBody, MissingFile

REQUEST_FIELD, SAMPLES_FIELD = "request", "samples"
MAX_REQUEST_BYTES = 64 * 1024


class _Parts:
    """Parser callbacks keeping the two expected parts, each within its own limit."""

    def __init__(self, samples_limit: int) -> None:
        self.limits = {REQUEST_FIELD: MAX_REQUEST_BYTES, SAMPLES_FIELD: samples_limit}
        self.values: dict[str, bytearray] = {}
        self.complete = False
        self._name = ""
        self._header_name = self._header_value = b""
        self._disposition = b""

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._on_part_begin,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data,
            "on_end": self._on_end,
        }

    def _on_part_begin(self) -> None:
        self._disposition = b""

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        if self._header_name.strip().lower() == b"content-disposition":
            self._disposition = self._header_value.strip()
        self._header_name = self._header_value = b""

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
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

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        sink = self.values[self._name]
        if len(sink) + (end - start) > self.limits[self._name]:
            raise BodyTooLarge(f"form part {self._name!r} over {self.limits[self._name]} bytes")
        sink += data[start:end]

    def _on_end(self) -> None:
        self.complete = True


async def read_submission(
    request: Request, samples_limit: int, timeout_seconds: float
) -> tuple[bytes, bytes | None]:
    """The request JSON and the uploaded sample set (None when none was sent)."""
    if not is_multipart(request):
        limit = MAX_REQUEST_BYTES
        return await read_bounded(request, limit, timeout_seconds), None
    _, params = parse_options_header(request.headers["content-type"])
    boundary = params.get(b"boundary")
    if not boundary:
        raise BadMultipart("multipart Content-Type without a boundary")
    parts = _Parts(samples_limit)
    chunks = bounded_chunks(request, samples_limit + MAX_REQUEST_BYTES + MULTIPART_SLACK_BYTES)
    try:
        async with asyncio.timeout(timeout_seconds):
            parser = MultipartParser(boundary, parts.callbacks())
            async for chunk in chunks:
                parser.write(chunk)
            parser.finalize()
    except TimeoutError:
        raise BodyReadTimeout(f"form not received within {timeout_seconds} s") from None
    except FormParserError as exc:
        raise BadMultipart(f"multipart parse failed: {exc}") from None
    if not parts.complete:
        raise BadMultipart("the body ended before the closing boundary")
    if SAMPLES_FIELD not in parts.values:
        raise MissingFile("no samples part", message="the form has no 'samples' file")
    samples = bytes(parts.values[SAMPLES_FIELD])
    if not samples:
        raise EmptyBody("zero-byte samples file", message="the 'samples' file is empty")
    return bytes(parts.values.get(REQUEST_FIELD, b"")), samples
