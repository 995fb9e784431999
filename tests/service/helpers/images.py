"""A corpus of hostile and awkward uploads, generated in memory, each with the exact answer.

Every entry names what the bytes are, what Content-Type the client claims, and
the status and reason code the service must give. Built by hand from file-format
structure (headers, chunks, CRCs) so nothing is downloaded and nothing is large.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

# The tests' body limit (QUSEC_MAX_BODY_BYTES); small so oversize cases stay cheap.
TEST_BODY_LIMIT = 256 * 1024


@dataclass(frozen=True)
class Case:
    name: str
    body: bytes
    content_type: str
    status: int
    reason: str | None  # None for accepted uploads

    def __repr__(self) -> str:
        return self.name


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def digit(size: tuple[int, int] = (28, 28), mode: str = "L") -> Image.Image:
    """A white bar on black, so every conversion has something to keep."""
    array = np.zeros((size[1], size[0]), dtype=np.uint8)
    array[size[1] // 4 : 3 * size[1] // 4, size[0] // 2 - 2 : size[0] // 2 + 2] = 255
    return Image.fromarray(array).convert(mode)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose header claims ``width`` x ``height`` grey pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", pixels)
        + png_chunk(b"IEND", b"")
    )


def bmp_claiming(width: int, height: int) -> bytes:
    header = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + 12, 0, 0, 54) + header + b"\x00" * 12


def gif_claiming(width: int, height: int) -> bytes:
    """A real one-frame GIF whose logical screen claims ``width`` x ``height``."""
    data = bytearray(encode(digit().convert("P"), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real JPEG with the frame header's dimensions rewritten."""
    data = bytearray(encode(digit(), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def webp_claiming(width: int, height: int) -> bytes:
    """An extended-format WebP (VP8X) whose canvas claims ``width`` x ``height``."""
    canvas = struct.pack("<I", width - 1)[:3] + struct.pack("<I", height - 1)[:3]
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" + canvas
    return b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x


def png_16bit() -> bytes:
    array = np.zeros((28, 28), dtype=np.uint16)
    array[7:21, 12:16] = 65535
    return encode(Image.fromarray(array), "PNG")


def png_palette_transparent() -> bytes:
    image = digit().convert("P")
    image.info["transparency"] = 0
    return encode(image, "PNG", transparency=0)


def gif_animated() -> bytes:
    frames = [digit().convert("P"), Image.new("P", (28, 28), 0)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


def png_with_bad_crc() -> bytes:
    data = bytearray(encode(digit(), "PNG"))
    data[29] ^= 0xFF  # inside IHDR's CRC
    return bytes(data)


def accepted_cases() -> list[Case]:
    png = encode(digit(), "PNG")
    return [
        Case("png-grey-28", png, "image/png", 200, None),
        Case("png-declared-as-text", png, "text/plain", 200, None),
        Case("jpeg-declared-as-png", encode(digit(mode="RGB"), "JPEG"), "image/png", 200, None),
        Case("png-no-content-type", png, "", 200, None),
        Case("bmp-rgb", encode(digit(mode="RGB"), "BMP"), "image/bmp", 200, None),
        Case("gif-animated", gif_animated(), "image/gif", 200, None),
        Case("webp-rgb", encode(digit(mode="RGB"), "WEBP"), "image/webp", 200, None),
        Case("png-rgba", encode(digit(mode="RGBA"), "PNG"), "image/png", 200, None),
        Case("png-la", encode(digit(mode="LA"), "PNG"), "image/png", 200, None),
        Case("png-palette-transparent", png_palette_transparent(), "image/png", 200, None),
        Case("png-1bit", encode(digit(mode="1"), "PNG"), "image/png", 200, None),
        Case("png-16bit", png_16bit(), "image/png", 200, None),
        Case("jpeg-cmyk", encode(digit(mode="CMYK"), "JPEG"), "image/jpeg", 200, None),
        Case(
            "jpeg-large-photo", encode(digit((1200, 900), "RGB"), "JPEG"), "image/jpeg", 200, None
        ),
        # A kilobyte that decodes to a megapixel: decoded on the pool, not the event loop.
        Case(
            "png-small-body-many-pixels",
            encode(Image.new("L", (1000, 1000)), "PNG"),
            "image/png",
            200,
            None,
        ),
        Case("png-tiny-1x1", encode(Image.new("L", (1, 1), 255), "PNG"), "image/png", 200, None),
    ]


def rejected_cases() -> list[Case]:
    png = encode(digit(), "PNG")
    jpeg = encode(digit((64, 64), "RGB"), "JPEG")
    return [
        Case("empty-body", b"", "image/png", 400, "empty_body"),
        Case("png-truncated", png[: len(png) // 2], "image/png", 400, "corrupt_image"),
        Case("png-signature-only", png[:8], "image/png", 400, "corrupt_image"),
        Case("png-bad-crc", png_with_bad_crc(), "image/png", 400, "bad_checksum"),
        Case("jpeg-truncated", jpeg[: len(jpeg) // 2], "image/jpeg", 400, "corrupt_image"),
        Case("jpeg-soi-only", b"\xff\xd8\xff", "image/jpeg", 400, "corrupt_image"),
        Case("gif-header-only", b"GIF89a", "image/gif", 400, "corrupt_image"),
        Case("bmp-magic-then-text", b"BM this is not a bitmap", "image/bmp", 400, "corrupt_image"),
        Case("riff-webp-garbage", b"RIFF\x10\x00\x00\x00WEBPVP8 junk", "image/webp", 400,
             "corrupt_image"),
        Case("gif-javascript-polyglot", b"GIF89a/*\x00\x00*/=alert(1);//" + b"\x00" * 20,
             "image/gif", 400, "corrupt_image"),
        Case("png-signature-then-html", b"\x89PNG\r\n\x1a\n<html><body>hi</body></html>",
             "image/png", 400, "corrupt_image"),
        Case("zeros", b"\x00" * 1024, "image/png", 415, "unsupported_format"),
        Case("html-declared-png", b"<html><script>alert(1)</script></html>", "image/png", 415,
             "unsupported_format"),
        Case("svg", b'<svg xmlns="http://www.w3.org/2000/svg"/>', "image/svg+xml", 415,
             "unsupported_format"),
        Case("tiff", encode(digit(), "TIFF"), "image/tiff", 415, "unsupported_format"),
        Case("ico", encode(digit(mode="RGBA"), "ICO"), "image/x-icon", 415, "unsupported_format"),
        Case("pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", "image/png", 415, "unsupported_format"),
        Case("zip-declared-png", b"PK\x03\x04" + png, "image/png", 415, "unsupported_format"),
        Case("png-bomb-50000", png_claiming(50_000, 50_000), "image/png", 413, "image_too_large"),
        Case("png-over-pixels", png_claiming(5000, 4000), "image/png", 413, "image_too_large"),
        Case("png-over-side", png_claiming(10_000, 1), "image/png", 413, "image_too_large"),
        Case("bmp-bomb", bmp_claiming(50_000, 50_000), "image/bmp", 413, "image_too_large"),
        Case("gif-bomb", gif_claiming(65_535, 65_535), "image/gif", 413, "image_too_large"),
        Case("jpeg-bomb", jpeg_claiming(65_000, 65_000), "image/jpeg", 413, "image_too_large"),
        Case("webp-bomb", webp_claiming(16_383, 16_383), "image/webp", 413, "image_too_large"),
        Case("png-over-body-limit", png + b"\x00" * TEST_BODY_LIMIT, "image/png", 413,
             "body_too_large"),
    ]  # fmt: skip


def all_cases() -> list[Case]:
    return accepted_cases() + rejected_cases()
