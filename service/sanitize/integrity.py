"""Structure checks on an upload's bytes, before any decoder sees them.

Decoders are lenient: Pillow skips the CRC of PNG data chunks, libjpeg fills a
frame whose scans are too short with grey and carries on, and every decoder stops
at the image's end marker and ignores what follows (a PNG+ZIP polyglot). Here the
container is walked once, cheaply (no pixel is decoded), and an upload is refused
with a stable reason when

* a PNG chunk fails its CRC (``bad_checksum``);
* a JPEG's frame header disagrees with its scans: a scan before the frame, a second
  frame, a scan naming a component the frame lacks, malformed segment lengths, or
  entropy-coded data too short to hold the blocks the frame claims
  (``inconsistent_frame``);
* a JPEG has more than ``max_scans`` scans (``too_many_scans``): each progressive scan
  is a pass over every coefficient, so repeated scans are a cheap file that is
  expensive to decode;
* bytes follow the end of the image: after PNG's IEND, JPEG's EOI, GIF's trailer,
  the RIFF size of a WebP, or the file size a BMP declares (``trailing_data``);
* the structure is cut short or malformed (``corrupt_image``).

PNG and JPEG dimensions are read here too, so that a decompression bomb is refused
as too large (413) before its data is judged.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from service.errors import (
    BadChecksum,
    CorruptImage,
    ImageTooLarge,
    InconsistentFrame,
    TooManyScans,
    TrailingData,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_MAX_CHUNK = (1 << 31) - 1
# JPEG frame markers Pillow's libjpeg decodes: baseline, extended and progressive Huffman,
# extended and progressive arithmetic. Lossless and hierarchical frames are refused.
_HUFFMAN_FRAMES = frozenset({0xC0, 0xC1, 0xC2})
_ARITHMETIC_FRAMES = frozenset({0xC9, 0xCA})
_OTHER_FRAMES = frozenset({0xC3, 0xC5, 0xC6, 0xC7, 0xCB, 0xCD, 0xCE, 0xCF})
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7


@dataclass(frozen=True)
class Limits:
    max_side: int
    max_pixels: int
    max_scans: int


@dataclass(frozen=True)
class PlainPng:
    """A PNG of the simplest kind: 8-bit grey or RGB, not interlaced, and no chunk but
    IHDR, IDAT and IEND (no palette, transparency, EXIF, text, ...). Its pixels are the
    IDAT data's zlib stream, unfiltered: Pillow's own PNG decoder reads them without
    the PNG plugin's container parsing (``service.sanitize.imaging``)."""

    mode: str  # "L" or "RGB"
    width: int
    height: int
    data: bytes  # the IDAT chunks' data, joined


def check_structure(data: bytes, fmt: str, limits: Limits) -> PlainPng | None:
    """Raise a ``ServiceError`` when ``data`` (already identified as ``fmt``) is malformed;
    for a PNG of the simplest kind, return what decoding it needs (``PlainPng``)."""
    try:
        return _CHECKS[fmt](data, limits)
    except (IndexError, struct.error):
        raise CorruptImage(f"{fmt} structure ends early or is malformed") from None


def check_size(fmt: str, width: int, height: int, limits: Limits) -> None:
    if width < 1 or height < 1:
        raise CorruptImage(f"{fmt} header claims {width}x{height}")
    if width > limits.max_side or height > limits.max_side:
        raise ImageTooLarge(f"{fmt} {width}x{height} exceeds the side limit {limits.max_side}")
    if width * height > limits.max_pixels:
        raise ImageTooLarge(
            f"{fmt} {width}x{height} = {width * height} pixels exceeds {limits.max_pixels}"
        )


# --- PNG ------------------------------------------------------------------------------------


# IHDR's colour type -> mode, for the types a PlainPng may have (bit depth 8 only).
_PLAIN_PNG_MODES = {0: "L", 2: "RGB"}
_PLAIN_PNG_CHUNKS = frozenset({b"IHDR", b"IDAT", b"IEND"})


def check_png(data: bytes, limits: Limits) -> PlainPng | None:
    view = memoryview(data)
    pos, index = len(PNG_SIGNATURE), 0
    plain, idat = True, []
    while True:
        if pos + 12 > len(data):
            raise CorruptImage(f"PNG ends inside chunk {index} (no IEND)")
        (length,) = struct.unpack_from(">I", data, pos)
        kind = bytes(view[pos + 4 : pos + 8])
        end = pos + 12 + length
        if length > _PNG_MAX_CHUNK or end > len(data):
            raise CorruptImage(f"PNG chunk {kind!r} runs past the end of the data")
        (stored,) = struct.unpack_from(">I", data, end - 4)
        if zlib.crc32(view[pos + 4 : end - 4]) != stored:
            raise BadChecksum(f"PNG chunk {index} ({kind!r}) fails its CRC")
        if index == 0:
            if kind != b"IHDR" or length != 13:
                raise CorruptImage("PNG does not start with an IHDR chunk")
            width, height, depth, colour, method, filtering, interlace = struct.unpack_from(
                ">IIBBBBB", data, pos + 8
            )
            check_size("PNG", width, height, limits)
            plain = depth == 8 and colour in _PLAIN_PNG_MODES and not (method or filtering)
            plain = plain and not interlace
        elif kind == b"IDAT":  # consecutive when plain: no other chunk lies between them
            idat.append((pos + 8, end - 4))
        if kind == b"IEND":
            if end != len(data):
                raise TrailingData(f"{len(data) - end} bytes after PNG's IEND")
            if not (plain and idat):
                return None
            pixels = b"".join(view[start:stop] for start, stop in idat)
            return PlainPng(_PLAIN_PNG_MODES[colour], width, height, pixels)
        plain = plain and kind in _PLAIN_PNG_CHUNKS
        pos, index = end, index + 1


# --- JPEG -----------------------------------------------------------------------------------


@dataclass
class _Frame:
    marker: int
    width: int
    height: int
    components: dict[int, tuple[int, int]]  # id -> (horizontal, vertical) sampling factors

    @property
    def max_h(self) -> int:
        return max(h for h, _ in self.components.values())

    @property
    def max_v(self) -> int:
        return max(v for _, v in self.components.values())


def check_jpeg(data: bytes, limits: Limits) -> None:
    pos, frame, scans = 2, None, 0
    while True:
        if data[pos] != 0xFF:
            raise CorruptImage(f"JPEG: no marker at byte {pos}")
        while data[pos + 1] == 0xFF:  # fill bytes
            pos += 1
        marker = data[pos + 1]
        if marker == 0xD9:  # EOI
            break
        if marker in _STANDALONE:
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        end = pos + 2 + length
        if length < 2 or end > len(data):
            raise CorruptImage(f"JPEG segment {marker:#04x} runs past the end of the data")
        segment = data[pos + 4 : end]
        if marker in _HUFFMAN_FRAMES or marker in _ARITHMETIC_FRAMES or marker in _OTHER_FRAMES:
            if frame is not None:
                raise InconsistentFrame("JPEG has a second frame header")
            frame = _read_frame(marker, segment, limits)
            pos = end
        elif marker == 0xDA:  # SOS, then entropy-coded data up to the next marker
            scans += 1
            if scans > limits.max_scans:
                raise TooManyScans(f"JPEG has more than {limits.max_scans} scans")
            pos = _check_scan(data, end, segment, frame)
        else:
            pos = end
    if frame is None or scans == 0:
        raise CorruptImage("JPEG has no frame or no scan")
    if pos + 2 != len(data):
        raise TrailingData(f"{len(data) - pos - 2} bytes after JPEG's EOI")


def _read_frame(marker: int, segment: bytes, limits: Limits) -> _Frame:
    if marker not in _HUFFMAN_FRAMES and marker not in _ARITHMETIC_FRAMES:
        raise InconsistentFrame(f"JPEG frame type {marker:#04x} is not supported")
    precision, height, width, count = struct.unpack_from(">BHHB", segment)
    if len(segment) != 6 + 3 * count or count not in (1, 3, 4) or precision != 8:
        raise InconsistentFrame(
            f"JPEG frame header: {count} components, {precision}-bit, {len(segment)} bytes"
        )
    check_size("JPEG", width, height, limits)
    components: dict[int, tuple[int, int]] = {}
    for i in range(count):
        ident, sampling = segment[6 + 3 * i], segment[7 + 3 * i]
        h, v = sampling >> 4, sampling & 0x0F
        if ident in components or not (1 <= h <= 4 and 1 <= v <= 4):
            raise InconsistentFrame(f"JPEG frame component {ident}: repeated or bad sampling")
        components[ident] = (h, v)
    return _Frame(marker, width, height, components)


def _check_scan(data: bytes, start: int, segment: bytes, frame: _Frame | None) -> int:
    """Check one scan header against the frame; return where its entropy data ends."""
    if frame is None:
        raise InconsistentFrame("JPEG scan before the frame header")
    count = segment[0]
    if count < 1 or len(segment) != 4 + 2 * count:
        raise InconsistentFrame(f"JPEG scan header of {len(segment)} bytes for {count} components")
    selected = [segment[1 + 2 * i] for i in range(count)]
    if any(ident not in frame.components for ident in selected) or len(set(selected)) != count:
        raise InconsistentFrame(f"JPEG scan names components {selected} the frame lacks")
    end = _entropy_end(data, start)
    spectral_start, approx = segment[1 + 2 * count], segment[3 + 2 * count]
    first_dc = spectral_start == 0 and approx >> 4 == 0
    if frame.marker in _HUFFMAN_FRAMES and first_dc:
        # Every block costs at least one Huffman-coded DC bit, plus (sequential) one
        # AC bit for end-of-block: a lower bound the data must meet.
        bits_per_block = 2 if frame.marker != 0xC2 else 1
        needed = _blocks(frame, selected) * bits_per_block
        if (end - start) * 8 < needed:
            raise InconsistentFrame(
                f"JPEG scan has {end - start} bytes of data; the frame's "
                f"{frame.width}x{frame.height} needs at least {needed // 8}"
            )
    return end


def _blocks(frame: _Frame, selected: list[int]) -> int:
    """8x8 blocks one scan over ``selected`` components codes (ISO 10918-1, A.2)."""
    if len(selected) == 1:
        h, v = frame.components[selected[0]]
        columns = -(-frame.width * h // (8 * frame.max_h))
        rows = -(-frame.height * v // (8 * frame.max_v))
        return columns * rows
    mcus = -(-frame.width // (8 * frame.max_h)) * -(-frame.height // (8 * frame.max_v))
    return mcus * sum(h * v for h, v in (frame.components[i] for i in selected))


def _entropy_end(data: bytes, pos: int) -> int:
    """The position of the first marker after entropy-coded data starting at ``pos``."""
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            raise CorruptImage("JPEG entropy-coded data runs to the end (no EOI)")
        following = data[pos + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
            pos += 1 if following == 0xFF else 2
            continue
        return pos


# --- GIF, WebP, BMP -------------------------------------------------------------------------


def check_gif(data: bytes, limits: Limits) -> None:
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while True:
        block = data[pos]
        if block == 0x3B:  # trailer
            if pos + 1 != len(data):
                raise TrailingData(f"{len(data) - pos - 1} bytes after GIF's trailer")
            return
        if block == 0x21:  # extension: label, then sub-blocks
            pos = _skip_sub_blocks(data, pos + 2)
        elif block == 0x2C:  # image descriptor, local colour table, LZW code size, data
            local = data[pos + 9]
            pos += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0)
            pos = _skip_sub_blocks(data, pos + 1)
        else:
            raise CorruptImage(f"GIF: unknown block {block:#04x} at byte {pos}")


def _skip_sub_blocks(data: bytes, pos: int) -> int:
    while True:
        size = data[pos]
        pos += 1 + size
        if size == 0:
            return pos
        if pos > len(data):
            raise CorruptImage("GIF data ends inside a sub-block")


def check_webp(data: bytes, limits: Limits) -> None:
    (size,) = struct.unpack_from("<I", data, 4)
    end = 8 + size
    if end > len(data):
        raise CorruptImage(f"WebP RIFF claims {size} bytes; {len(data) - 8} present")
    if end + (size & 1) < len(data):
        raise TrailingData(f"{len(data) - end} bytes after the WebP RIFF chunk")
    pos = 12
    while pos < end:
        (chunk,) = struct.unpack_from("<I", data, pos + 4)
        pos += 8 + chunk + (chunk & 1)
    if pos > end + 1:
        raise CorruptImage("a WebP chunk runs past the RIFF size")


def check_bmp(data: bytes, limits: Limits) -> None:
    (declared,) = struct.unpack_from("<I", data, 2)
    if declared and len(data) > declared:
        raise TrailingData(f"{len(data) - declared} bytes after the BMP's declared size")


_CHECKS = {
    "PNG": check_png,
    "JPEG": check_jpeg,
    "GIF": check_gif,
    "WEBP": check_webp,
    "BMP": check_bmp,
}
