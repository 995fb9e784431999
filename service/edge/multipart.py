"""Pull the one ``file`` upload out of a multipart/form-data body, in memory, bounded.

A streaming parser (python-multipart) with callbacks that keep only what the
service needs: the bytes of the single file part, at most ``limit`` of them.
Other fields are counted and dropped. Nothing is spooled to disk, so the
service also runs on a read-only filesystem, and memory stays bounded by the
body limit that the caller enforces while streaming.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from service.errors import BadMultipart, BodyTooLarge, MissingFile

FILE_FIELD = "file"
MAX_PARTS = 8
MAX_FIELD_BYTES = 64 * 1024


class PartCollector:
    """Streaming-parser callbacks: headers are gathered per part, then subclasses decide.

    A subclass implements ``begin_part()``, ``start_part(disposition_options, headers)``
    (after a part's headers) and ``part_data(chunk)``, raising service errors to refuse.
    """

    def __init__(self) -> None:
        self.complete = False
        self._header_name = self._header_value = b""
        self._headers: dict[bytes, bytes] = {}

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

    def begin_part(self) -> None:
        """A new part starts (before its headers)."""

    def start_part(self, options: dict[bytes, bytes], headers: dict[bytes, bytes]) -> None:
        raise NotImplementedError

    def part_data(self, chunk: bytes) -> None:
        raise NotImplementedError

    def _on_part_begin(self) -> None:
        self._headers = {}
        self.begin_part()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        self._headers[self._header_name.strip().lower()] = self._header_value.strip()
        self._header_name, self._header_value = b"", b""

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self.start_part(options, self._headers)

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        self.part_data(data[start:end])

    def _on_end(self) -> None:
        self.complete = True


async def parse_multipart(
    content_type: str, chunks: AsyncIterator[bytes], collector: PartCollector
) -> None:
    """Feed a multipart body through ``collector``; ``BadMultipart`` if it is malformed."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise BadMultipart("multipart Content-Type without a boundary")
    try:
        parser = MultipartParser(boundary, collector.callbacks())
        async for chunk in chunks:
            parser.write(chunk)
        parser.finalize()
    except FormParserError as exc:
        raise BadMultipart(f"multipart parse failed: {exc}") from None
    if not collector.complete:
        raise BadMultipart("the body ended before the closing boundary")


class _FilePart(PartCollector):
    """Collects the ``file`` part and refuses anything unusual."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.data: bytearray | None = None
        self.content_type = ""
        self.files = 0
        self.parts = 0
        self._sink: bytearray | None = None
        self._dropped = 0

    def begin_part(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise BadMultipart(f"more than {MAX_PARTS} parts")
        self._sink, self._dropped = None, 0

    def start_part(self, options: dict[bytes, bytes], headers: dict[bytes, bytes]) -> None:
        if b"name" not in options:
            raise BadMultipart("a part has no Content-Disposition name")
        if b"filename" not in options:
            return  # a plain field: dropped
        self.files += 1
        if self.files > 1:
            raise BadMultipart("more than one file in the form")
        if options[b"name"].decode("latin-1") == FILE_FIELD:
            self.data = self._sink = bytearray()
            self.content_type = headers.get(b"content-type", b"").decode("latin-1")

    def part_data(self, chunk: bytes) -> None:
        if self._sink is None:
            self._dropped += len(chunk)
            if self._dropped > MAX_FIELD_BYTES:
                raise BadMultipart(f"a non-file part is over {MAX_FIELD_BYTES} bytes")
            return
        if len(self._sink) + len(chunk) > self.limit:
            raise BodyTooLarge(
                f"uploaded file exceeds the limit of {self.limit} bytes",
                message=f"the uploaded file exceeds the limit of {self.limit} bytes",
            )
        self._sink += chunk


async def read_file_part(
    content_type: str, chunks: AsyncIterator[bytes], limit: int
) -> tuple[bytes, str]:
    """The ``file`` part's bytes and declared type; ``BadMultipart``/``MissingFile`` otherwise."""
    collector = _FilePart(limit)
    await parse_multipart(content_type, chunks, collector)
    if collector.data is None:
        raise MissingFile(f"no file part named {FILE_FIELD!r}")
    return bytes(collector.data), collector.content_type
