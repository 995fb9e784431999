"""Files that are cheap to send and built to be expensive or misleading to decode.

Generated in memory from format structure; each is a few bytes to a few hundred
kilobytes. ``budget_cases`` are the decode-budget attacks (refused or decoded
within budget); ``integrity_cases`` the structure checks, each with its reason.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
from PIL import Image

from tests.service.helpers.images import Case, digit, encode, png_chunk

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

SIDE = 4096


def _jpeg_segments(data: bytes) -> tuple[int, int]:
    """(start of the last SOS segment, start of EOI) in a JPEG from Pillow."""
    return data.rindex(b"\xff\xda"), data.rindex(b"\xff\xd9")


def progressive_jpeg(repeats: int, side: int = SIDE) -> bytes:
    """A progressive grey JPEG of ``side`` x ``side`` whose last scan is repeated."""
    image = Image.new("L", (side, side), 0)
    image.paste(255, (side // 4, side // 4, side // 2, 3 * side // 4))
    data = encode(image, "JPEG", progressive=True, quality=50)
    last_scan, eoi = _jpeg_segments(data)
    return data[:eoi] + data[last_scan:eoi] * repeats + data[eoi:]


def png_16bit_canvas(side: int = SIDE) -> bytes:
    """A 16-bit grey PNG of ``side`` x ``side``: 32 MiB of samples in a few dozen KB."""
    array = np.zeros((side, side), dtype=np.uint16)
    array[side // 4 : 3 * side // 4, side // 2 - side // 16 : side // 2 + side // 16] = 65535
    return encode(Image.fromarray(array), "PNG", compress_level=9)


def webp_canvas(side: int = SIDE) -> bytes:
    """A lossless WebP canvas of ``side`` x ``side`` in well under a kilobyte."""
    return encode(Image.new("RGB", (side, side), (0, 0, 0)), "WEBP", lossless=True)


def progressive_jpeg_scans(scans: int, side: int = SIDE) -> bytes:
    """A progressive grey JPEG of ``side`` x ``side`` with exactly ``scans`` scans."""
    base = progressive_jpeg(0, side)
    return progressive_jpeg(scans - base.count(b"\xff\xda"), side)


def _zeroed_rows(side: int, bytes_per_pixel: int) -> bytes:
    """zlib data of ``side`` rows of ``side`` zero pixels, each row with filter type 0."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + side * bytes_per_pixel)
    return b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()


def png_rgba16_canvas(side: int = SIDE) -> bytes:
    """A 16-bit RGBA PNG of ``side`` x ``side``: 128 MiB of samples in about 130 KB."""
    header = struct.pack(">IIBBBBB", side, side, 16, 6, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", _zeroed_rows(side, 8))
        + png_chunk(b"IEND", b"")
    )


def apng_canvas(frames: int = 200, side: int = SIDE) -> bytes:
    """An animated PNG of ``frames`` full ``side`` x ``side`` grey frames (a few MB)."""
    data = _zeroed_rows(side, 1)
    chunks = [
        png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)),
        png_chunk(b"acTL", struct.pack(">II", frames, 0)),
    ]
    sequence = 0
    for frame in range(frames):
        control = struct.pack(">IIIIIHHBB", sequence, side, side, 0, 0, 1, 10, 0, 0)
        chunks.append(png_chunk(b"fcTL", control))
        sequence += 1
        if frame == 0:
            chunks.append(png_chunk(b"IDAT", data))
        else:
            chunks.append(png_chunk(b"fdAT", struct.pack(">I", sequence) + data))
            sequence += 1
    return PNG_SIGNATURE + b"".join(chunks) + png_chunk(b"IEND", b"")


def png_bad_idat_crc() -> bytes:
    data = bytearray(encode(digit(), "PNG"))
    idat = data.index(b"IDAT")
    (length,) = struct.unpack_from(">I", data, idat - 4)
    data[idat + 4 + length] ^= 0x01  # first byte of IDAT's CRC
    return bytes(data)


def jpeg_frame_taller_than_its_data(factor: int = 40) -> bytes:
    """A real 28x28 JPEG whose frame header claims ``factor`` times the height."""
    data = bytearray(encode(digit(), "JPEG"))
    sof = data.index(b"\xff\xc0")
    (height,) = struct.unpack_from(">H", data, sof + 5)
    struct.pack_into(">H", data, sof + 5, height * factor)
    return bytes(data)


def jpeg_scan_of_missing_component() -> bytes:
    """A real grey JPEG whose scan names component 9, which its frame does not declare."""
    data = bytearray(encode(digit(), "JPEG"))
    sos = data.index(b"\xff\xda")
    data[sos + 5] = 9  # the first (only) component selector
    return bytes(data)


def jpeg_two_frames() -> bytes:
    data = encode(digit(), "JPEG")
    sof = data.index(b"\xff\xc0")
    (length,) = struct.unpack_from(">H", data, sof + 2)
    frame = data[sof : sof + 2 + length]
    return data[:sof] + frame + data[sof:]


def gif_with_trailing(extra: bytes) -> bytes:
    return encode(digit().convert("P"), "GIF") + extra


def png_text_after_iend() -> bytes:
    return encode(digit(), "PNG") + png_chunk(b"tEXt", b"comment\x00after the end")


ZIP = b"PK\x03\x04" + b"\x00" * 60


def budget_cases() -> list[Case]:
    """The decode-budget attacks with the answer each must get under the default limits,
    with the anonymous ceiling on the estimated decode cost lifted (it has its own cases)."""
    return [
        # 1,000 repeats of the last scan: refused by the scan cap before any decoding.
        Case("jpeg-progressive-1000-scans", progressive_jpeg(1000), "image/jpeg", 413,
             "too_many_scans"),
        # Within the scan cap: decoded (the DCT scaling keeps it cheap) within the deadline.
        Case("jpeg-progressive-repeated-within-cap", progressive_jpeg(20), "image/jpeg", 200,
             None),
        Case("png-16bit-4096", png_16bit_canvas(), "image/png", 200, None),
        Case("webp-tiny-4096", webp_canvas(), "image/webp", 200, None),
    ]  # fmt: skip


def integrity_cases() -> list[Case]:
    png = encode(digit(), "PNG")
    jpeg = encode(digit(), "JPEG")
    webp = encode(digit(mode="RGB"), "WEBP")
    bmp = encode(digit(mode="RGB"), "BMP")
    return [
        Case("png-bad-idat-crc", png_bad_idat_crc(), "image/png", 400, "bad_checksum"),
        Case("png-zip-polyglot", png + ZIP, "image/png", 400, "trailing_data"),
        Case("png-chunk-after-iend", png_text_after_iend(), "image/png", 400, "trailing_data"),
        Case("jpeg-trailing", jpeg + ZIP, "image/jpeg", 400, "trailing_data"),
        Case("gif-trailing", gif_with_trailing(b"<script>"), "image/gif", 400, "trailing_data"),
        Case("webp-trailing", webp + b"\x00" * 16, "image/webp", 400, "trailing_data"),
        Case("bmp-trailing", bmp + ZIP, "image/bmp", 400, "trailing_data"),
        Case("jpeg-frame-taller-than-data", jpeg_frame_taller_than_its_data(), "image/jpeg", 400,
             "inconsistent_frame"),
        Case("jpeg-scan-of-missing-component", jpeg_scan_of_missing_component(), "image/jpeg",
             400, "inconsistent_frame"),
        Case("jpeg-two-frames", jpeg_two_frames(), "image/jpeg", 400, "inconsistent_frame"),
    ]  # fmt: skip
