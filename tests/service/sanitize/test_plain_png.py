"""Plain PNGs (8-bit grey or RGB, not interlaced, only IHDR, IDAT and IEND) are decoded by
Pillow's PNG decoder without its PNG plugin (``service.sanitize.imaging._decode_plain``):
the pixels and facts must be exactly what the plugin gives. The reference is the same
image with a text chunk added, which takes the plugin's path. The rows are written here
with each of PNG's five filters, so every way back from a filter is checked."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from service.errors import CorruptImage
from service.sanitize.imaging import ImagePolicy, decode_image
from service.sanitize.integrity import Limits, PlainPng, check_structure

LIMITS = Limits(max_side=8192, max_pixels=4096 * 4096, max_scans=32)
POLICIES = [
    ImagePolicy(input_shape=(3, 32, 32), max_pixels=4096 * 4096, max_side=8192),
    ImagePolicy(input_shape=(1, 28, 28), max_pixels=4096 * 4096, max_side=8192),
    ImagePolicy((3, 24, 40), 4096 * 4096, 8192, resize_policy="stretch"),
]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _paeth(left: int, up: int, corner: int) -> int:
    estimate = left + up - corner
    to_left, to_up, to_corner = abs(estimate - left), abs(estimate - up), abs(estimate - corner)
    if to_left <= to_up and to_left <= to_corner:
        return left
    return up if to_up <= to_corner else corner


def _filtered(rows: np.ndarray, channels: int) -> bytes:
    """Each row with filter ``row % 5`` (None, Sub, Up, Average, Paeth), as an encoder writes."""
    out, previous = bytearray(), [0] * rows.shape[1]
    for index, row in enumerate(rows.tolist()):
        kind = index % 5
        line = []
        for x, value in enumerate(row):
            left = row[x - channels] if x >= channels else 0
            up = previous[x]
            corner = previous[x - channels] if x >= channels else 0
            predicted = [0, left, up, (left + up) // 2, _paeth(left, up, corner)][kind]
            line.append((value - predicted) % 256)
        out += bytes([kind, *line])
        previous = row
    return bytes(out)


def plain_png(pixels: np.ndarray, idat_parts: int = 1, *, extra: bytes = b"") -> bytes:
    """An 8-bit grey (H, W) or RGB (H, W, 3) PNG, its zlib stream cut into ``idat_parts``
    IDAT chunks, with ``extra`` (whole chunks) after IHDR."""
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else 3
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0 if channels == 1 else 2, 0, 0, 0)
    stream = zlib.compress(_filtered(pixels.reshape(height, width * channels), channels))
    step = -(-len(stream) // idat_parts)
    idat = b"".join(_chunk(b"IDAT", stream[i : i + step]) for i in range(0, len(stream), step))
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + extra + idat + _chunk(b"IEND", b"")


def _text(data: bytes) -> bytes:
    """The same PNG with a text chunk after IHDR: not plain, so Pillow's plugin decodes it."""
    return data[:33] + _chunk(b"tEXt", b"Comment\x00reference") + data[33:]


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    ramp = np.add.outer(np.arange(30), np.arange(45)).astype(np.uint8) * 3
    return [
        rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
        rng.integers(0, 256, (28, 28), dtype=np.uint8),
        np.stack([ramp, ramp[::-1], 255 - ramp], axis=-1),
        ramp,
        rng.integers(0, 256, (1, 1, 3), dtype=np.uint8),
        rng.integers(0, 256, (257, 190, 3), dtype=np.uint8),  # reduced early for a small input
    ]


@pytest.mark.parametrize("pixels", _images(), ids=lambda p: "x".join(map(str, p.shape)))
@pytest.mark.parametrize("parts", [1, 3])
def test_plain_pngs_decode_exactly_as_pillows_plugin_decodes_them(pixels, parts) -> None:
    data = plain_png(pixels, parts)
    plain = check_structure(data, "PNG", LIMITS)
    assert isinstance(plain, PlainPng)
    assert (plain.width, plain.height) == (pixels.shape[1], pixels.shape[0])
    reference = _text(data)
    assert check_structure(reference, "PNG", LIMITS) is None
    for policy in POLICIES:
        ours, pillows = decode_image(data, policy), decode_image(reference, policy)
        assert ours.facts == pillows.facts
        assert ours.pixels.dtype == pillows.pixels.dtype == np.float32
        assert np.array_equal(ours.pixels, pillows.pixels)


def _ihdr_changed(data: bytes, **fields: int) -> bytes:
    names = ("width", "height", "depth", "colour", "method", "filter", "interlace")
    values = dict(zip(names, struct.unpack_from(">IIBBBBB", data, 16), strict=True))
    values.update(fields)
    return data[:8] + _chunk(b"IHDR", struct.pack(">IIBBBBB", *values.values())) + data[33:]


@pytest.mark.parametrize(
    "change",
    [
        lambda d: _text(d),
        lambda d: d[:33] + _chunk(b"tRNS", b"\x00\x01\x00\x02\x00\x03") + d[33:],
        lambda d: d[:33] + _chunk(b"eXIf", b"MM\x00*\x00\x00\x00\x08\x00\x00") + d[33:],
        lambda d: _ihdr_changed(d, interlace=1),
        lambda d: _ihdr_changed(d, depth=16),
        lambda d: _ihdr_changed(d, colour=6),
    ],
    ids=["text", "transparency", "exif", "interlaced", "16-bit", "rgba"],
)
def test_anything_but_a_plain_png_goes_to_pillows_plugin(change) -> None:
    data = plain_png(np.zeros((4, 4, 3), np.uint8))
    assert check_structure(data, "PNG", LIMITS) is not None
    assert check_structure(change(data), "PNG", LIMITS) is None


def _short_stream(cut: int | None) -> bytes:
    """A 16 x 16 RGB PNG whose zlib stream is cut after ``cut`` bytes, or (None) holds
    only 8 of its rows in a stream that ends properly."""
    pixels = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    if cut is None:
        return _ihdr_changed(plain_png(pixels[:8]), height=16)
    stream = zlib.compress(_filtered(pixels.reshape(16, 48), 3))[:cut]
    ihdr = struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0)
    idat = _chunk(b"IDAT", stream)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + idat + _chunk(b"IEND", b"")


@pytest.mark.parametrize("cut", [10, 400])
def test_a_cut_image_stream_is_corrupt_on_both_paths(cut: int) -> None:
    data = _short_stream(cut)
    assert check_structure(data, "PNG", LIMITS) is not None
    for candidate in (data, _text(data)):
        with pytest.raises(CorruptImage):
            decode_image(candidate, POLICIES[0])


def test_a_stream_that_ends_early_decodes_as_pillows_plugin_decodes_it() -> None:
    """Pillow fills the rows a properly ended stream lacks with zeros, without an error;
    the plain path does the same, not something of its own."""
    data = _short_stream(None)
    ours, pillows = decode_image(data, POLICIES[0]), decode_image(_text(data), POLICIES[0])
    assert np.array_equal(ours.pixels, pillows.pixels)
    assert ours.facts == pillows.facts
