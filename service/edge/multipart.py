"""Pull the one ``file`` upload out of a multipart/form-data body, in memory, bounded.

A streaming parser (python-multipart) with callbacks that keep only what the
service needs: the bytes of the single file part, at most ``limit`` of them.
Other fields are counted and dropped. Nothing is spooled to disk, so the
service also runs on a read-only filesystem, and memory stays bounded by the
body limit that the caller enforces while streaming.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

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
    with _parsing(_boundary(content_type), collector) as parser:
        async for chunk in chunks:
            parser.write(chunk)


def _boundary(content_type: str) -> bytes:
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise BadMultipart("multipart Content-Type without a boundary")
    return boundary


@contextmanager
def _parsing(boundary: bytes, collector: PartCollector) -> Iterator[MultipartParser]:
    """python-multipart's parser, fed in the block, then finalized: ``BadMultipart`` when
    it fails or the body ended before the closing boundary."""
    try:
        parser = MultipartParser(boundary, collector.callbacks())
        yield parser
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


def form_file(content_type: str, body: bytes, limit: int, direct: bool = True) -> tuple[bytes, str]:
    """The ``file`` part's bytes and declared type in a whole multipart body;
    ``BadMultipart``/``MissingFile``/``BodyTooLarge`` otherwise.

    The form clients send with one file and nothing else (curl ``-F``, requests, httpx, a
    browser's form) is read directly (``_single_part``): python-multipart's parser, pure
    Python, took about 36 us over a 3 kB upload here, more than all the rest of the
    request on the event loop but the decode. Any other body (``direct`` False: every
    body) goes through that parser, whose answer is the reference: the direct reading
    hands the same headers and data to the same collector, and gives way to the parser
    wherever the two could differ (``tests/service/edge/test_multipart.py`` compares them).
    """
    boundary = _boundary(content_type)
    collector = _FilePart(limit)
    part = _single_part(body, boundary) if direct else None
    if part is None:
        with _parsing(boundary, collector) as parser:
            parser.write(body)
    else:
        headers, start, end = part
        collector.begin_part()
        _, options = parse_options_header(headers.get(b"content-disposition", b""))
        collector.start_part(options, headers)
        collector.part_data(body[start:end])
        collector.complete = True
    if collector.data is None:
        raise MissingFile(f"no file part named {FILE_FIELD!r}")
    return bytes(collector.data), collector.content_type


# A part header's name, as python-multipart accepts one (letters and hyphens).
_HEADER_NAME = re.compile(rb"[A-Za-z-]+")


def _single_part(body: bytes, boundary: bytes) -> tuple[dict[bytes, bytes], int, int] | None:
    """(headers, data start, data end) of a body that is exactly one part: the delimiter
    and a line break, header lines ``Name: value``, an empty line, the data, a line
    break and the closing delimiter, and at most one line break after it. None for any
    other body: a preamble or epilogue, padding after a delimiter, a second part, folded
    or odd header lines, no headers, or the delimiter anywhere in the data."""
    delimiter = b"--" + boundary
    opening = delimiter + b"\r\n"
    closing = b"\r\n" + delimiter + b"--"
    if not body.startswith(opening):
        return None
    if body.endswith(closing):
        end = len(body) - len(closing)
    elif body.endswith(closing + b"\r\n"):
        end = len(body) - len(closing) - 2
    else:
        return None
    heads = len(opening)
    blank = body.find(b"\r\n\r\n", heads)
    # The part ends at the first line break followed by the delimiter: it must be ``end``.
    if blank <= heads or blank + 4 > end or body.find(b"\r\n" + delimiter, heads) != end:
        return None
    headers: dict[bytes, bytes] = {}
    for line in body[heads:blank].split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if not colon or not _HEADER_NAME.fullmatch(name) or b"\r" in value or b"\n" in value:
            return None
        headers[name.lower()] = value.strip()
    return headers, blank + 4, end
