"""Whatever the caller holds as an image, as the bytes of an image file to upload.

A path or an open binary file is sent as it is, and so are bytes; a Pillow image or a
numpy array is encoded as PNG. Pillow and numpy are never imported here: an object can
only be one of theirs if its module is already loaded, so ``sys.modules`` tells.
"""

from __future__ import annotations

import io
import os
import struct
import sys
import zlib
from typing import Any

# Leading bytes of the formats the service reads; anything else is sent as octet-stream
# (the service identifies the format from the bytes whatever the client declares).
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
)
_PNG_COLOUR_TYPES = {1: 0, 3: 2}  # channels -> PNG colour type (grayscale, RGB)


def media_type(data: bytes) -> str:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    for signature, kind in _SIGNATURES:
        if data.startswith(signature):
            return kind
    return "application/octet-stream"


def file_bytes(source: Any) -> bytes | None:
    """The bytes of a path, a binary file or bytes; None for anything else."""
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as f:
            return f.read()
    if hasattr(source, "read"):
        data = source.read()
        if not isinstance(data, bytes):
            raise TypeError("a file to upload must be opened in binary mode ('rb')")
        return data
    return None


def image_bytes(image: Any) -> bytes:
    """The file bytes to upload for ``image``: a path, bytes, a binary file, a Pillow image,
    or a numpy array (see ``array_png``)."""
    data = file_bytes(image)
    if data is not None:
        return data
    pil = sys.modules.get("PIL.Image")
    if pil is not None and isinstance(image, pil.Image):
        out = io.BytesIO()
        image.save(out, format="PNG")
        return out.getvalue()
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(image, numpy.ndarray):
        return array_png(image)
    raise TypeError(
        f"cannot classify a {type(image).__name__}: pass a path, bytes, a binary file, "
        "a PIL image or a numpy array"
    )


def array_png(array: Any) -> bytes:
    """A numpy array as an 8-bit PNG.

    Shapes: (H, W) grayscale; (H, W, C) with C = 1 or 3; or (C, H, W) as the models take
    it, when C is 1 or 3 and the last axis is not. Values: uint8 as they are, or floats in
    [0, 1] (scaled to 0..255 and rounded), or other integers in 0..255.
    """
    numpy = sys.modules["numpy"]
    pixels = numpy.asarray(array)
    if pixels.ndim == 3 and pixels.shape[0] in (1, 3) and pixels.shape[-1] not in (1, 3):
        pixels = pixels.transpose(1, 2, 0)  # CHW -> HWC
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in _PNG_COLOUR_TYPES or 0 in pixels.shape:
        raise ValueError(
            f"an image array must be (H, W), (H, W, 1|3) or (1|3, H, W), not {pixels.shape}"
        )
    pixels = _as_uint8(numpy, pixels)
    height, width, channels = pixels.shape
    # Each row of the image data starts with its filter type, 0 (none).
    rows = numpy.zeros((height, 1 + width * channels), dtype=numpy.uint8)
    rows[:, 1:] = pixels.reshape(height, width * channels)
    header = struct.pack(">IIBBBBB", width, height, 8, _PNG_COLOUR_TYPES[channels], 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + _chunk(b"IEND", b"")
    )


def _as_uint8(numpy: Any, pixels: Any) -> Any:
    if pixels.dtype == numpy.uint8:
        return numpy.ascontiguousarray(pixels)
    if numpy.issubdtype(pixels.dtype, numpy.floating):
        if not numpy.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 1:
            raise ValueError("a float image array must hold values in [0, 1]")
        return numpy.rint(pixels * 255).astype(numpy.uint8)
    if numpy.issubdtype(pixels.dtype, numpy.integer):
        if pixels.min() < 0 or pixels.max() > 255:
            raise ValueError("an integer image array must hold values in 0..255")
        return pixels.astype(numpy.uint8)
    raise ValueError(f"an image array must hold integers or floats, not {pixels.dtype}")


def _chunk(kind: bytes, data: bytes) -> bytes:
    checksum = zlib.crc32(kind + data)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", checksum)
