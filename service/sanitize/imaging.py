"""Identify, decode and normalise uploaded images, refusing hostile ones cheaply.

The order matters for safety:

1. The format comes from the leading bytes, never from the declared type, and
   only PNG, JPEG, BMP, GIF and WebP pass (415 otherwise). Pillow is then told
   to try that one format only, so no other decoder ever sees the bytes.
2. The container's structure is walked (``service.sanitize.integrity``): chunk CRCs,
   JPEG frame and scan consistency, the number of JPEG scans, nothing after the
   end marker. Width and height come from the header, which Pillow parses without
   allocating pixels; anything over the side or pixel limit is refused (413)
   before decoding, which is what stops decompression bombs.
3. Only then are pixels decoded: the first frame of animations; JPEGs at the
   smallest DCT scale that still covers the target size; anything larger than
   a few times the target is reduced in its own mode first, so later copies are
   small. Truncated or corrupt data fails here (400).

Normalisation: EXIF orientation is applied, then the fitting policy shared with training
(``models/imaging.py``, documented in docs/service.md): transparency onto the background
grey, any mode to 8-bit grey or RGB, ``letterbox`` (default) or ``stretch`` to the model's
input size. Whether the image showed colour before that is recorded (``colour`` in its
facts).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from models.imaging import fit, to_channels
from service.errors import (
    CorruptImage,
    DecodeBudgetExceeded,
    ImageTooLarge,
    ServiceError,
    UnsupportedFormat,
)
from service.sanitize.integrity import Limits, PlainPng, check_size, check_structure

ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")
# Modes Image.reduce handles and whose box average means the same thing after conversion.
_REDUCIBLE_MODES = frozenset({"L", "LA", "RGB", "RGBA", "CMYK", "I", "F"})
# JPEG draft keeps at least this many times the target size before the final filter.
_DRAFT_OVERSAMPLE = 4
_EXIF_ORIENTATION = 0x0112
# What counts as a colour image (``_is_colourful``): JPEG noise and anti-aliasing on grey
# stay far below both; a photo passes both easily.
COLOUR_MIN_CHROMA = 32  # of 255
COLOUR_MIN_FRACTION = 0.05
_COLOUR_SAMPLE_PIXELS = 128 * 128


@dataclass(frozen=True)
class ImagePolicy:
    """What the decoder accepts and how it maps an image onto the model input."""

    input_shape: tuple[int, int, int]  # (C, H, W)
    max_pixels: int
    max_side: int
    resize_policy: str = "letterbox"
    background: int = 0
    max_jpeg_scans: int = 32

    @property
    def limits(self) -> Limits:
        return Limits(self.max_side, self.max_pixels, self.max_jpeg_scans)


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # (C, H, W) float32 in [0, 1]
    facts: dict[str, Any]  # what the upload was: format, size, mode, frames, orientation


def identify_format(data: bytes) -> str:
    """The allowed format whose signature starts ``data``; 415 for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:2] == b"BM":
        return "BMP"
    raise UnsupportedFormat(f"leading bytes {data[:12].hex()} match no allowed format")


@dataclass
class OpenedImage:
    """An image whose header passed the checks; no pixel has been decoded yet. A plain
    PNG (``PlainPng``) is not opened by Pillow at all: its pixels are decoded directly."""

    image: Image.Image | None
    facts: dict[str, Any]
    plain: PlainPng | None = None

    @property
    def pixel_count(self) -> int:
        return self.facts["width"] * self.facts["height"]


def decode_image(data: bytes, policy: ImagePolicy) -> DecodedImage:
    """Bytes -> (C, H, W) float32 in [0, 1], or a ``ServiceError`` saying why not."""
    return finish_decode(open_image(data, policy), policy)


def open_image(data: bytes, policy: ImagePolicy) -> OpenedImage:
    """Identify the format and check the header's dimensions (steps 1 and 2)."""
    fmt = identify_format(data)
    plain = check_structure(data, fmt, policy.limits)
    if plain is not None:
        facts = {"format": fmt, "width": plain.width, "height": plain.height}
        return OpenedImage(None, {**facts, "mode": plain.mode, "animated": False}, plain)
    with _decoder_errors(fmt):
        return _open_checked(data, fmt, policy)


def finish_decode(opened: OpenedImage, policy: ImagePolicy) -> DecodedImage:
    """Decode the first frame and normalise it to the model's input (step 3)."""
    facts = opened.facts
    channels, height, width = policy.input_shape
    with _decoder_errors(facts["format"]):
        if opened.plain is not None:
            image, facts["orientation"] = _reduce_early(_decode_plain(opened.plain), policy), 1
        else:
            assert opened.image is not None
            image = _load_first_frame(opened.image, policy)
            facts["orientation"] = _orientation(image)
        if facts["orientation"] != 1:  # exif_transpose copies even when there is nothing to do
            image = ImageOps.exif_transpose(image)
        # Grey stays grey; anything else is judged for colour in RGB before the model's mode.
        flat = to_channels(image, 1 if image.mode == "L" else 3, policy.background)
        planes = None  # flat's samples as (C, H, W) uint8, when judging colour read them all
        facts["colour"] = False
        if flat.mode == "RGB":
            sample = _colour_sample(flat)
            sample_planes = _planes(sample)
            facts["colour"] = _is_colourful(sample_planes)
            planes = sample_planes if sample is flat else None
        mode = "L" if channels == 1 else "RGB"
        if flat.mode != mode:
            flat, planes = flat.convert(mode), None
        fitted, facts["resized"] = fit(flat, height, width, policy.resize_policy, policy.background)
        # One copy of the samples serves both the colour judgement and the model's input
        # when the upload is already the model's size and mode (no resize, no conversion).
        pixels = (planes if planes is not None and fitted is flat else _planes(fitted)).astype(
            np.float32
        )
        pixels /= 255.0
    return DecodedImage(pixels, facts)


def _planes(image: Image.Image) -> np.ndarray:
    """An "L" or "RGB" image's samples as one (C, H, W) uint8 array, each plane contiguous."""
    samples = np.asarray(image)
    if samples.ndim == 2:
        return samples[None]
    return np.ascontiguousarray(samples.transpose(2, 0, 1))


@contextmanager
def _decoder_errors(fmt: str) -> Iterator[None]:
    try:
        yield
    except ServiceError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc)) from None
    except MemoryError as exc:  # the decode worker's memory cap
        raise DecodeBudgetExceeded(f"{fmt} decode ran out of memory: {exc}") from None
    except Exception as exc:
        # Decoders signal bad input with many exception types (OSError, SyntaxError,
        # ValueError, struct.error, EOFError, ...); all mean the bytes are not a
        # decodable image. The detail is logged by the error handler.
        raise CorruptImage(f"{fmt} decode failed: {type(exc).__name__}: {exc}") from None


def _open_checked(data: bytes, fmt: str, policy: ImagePolicy) -> OpenedImage:
    """Parse the header only and refuse oversized images before any pixel is allocated."""
    image = Image.open(io.BytesIO(data), formats=[fmt])
    width, height = image.size
    check_size(fmt, width, height, policy.limits)
    facts = {
        "format": fmt,
        "width": width,
        "height": height,
        "mode": image.mode,
        "animated": bool(getattr(image, "is_animated", False)),
    }
    return OpenedImage(image, facts)


def _decode_plain(png: PlainPng) -> Image.Image:
    """Pillow's PNG decoder ("zip": inflate, then undo each row's filter) on the IDAT data,
    without the PNG plugin around it, whose container parsing costs several times the
    decoding of a small image. The image has no EXIF (no chunk but IHDR, IDAT and IEND),
    so its orientation is 1. A stream cut short is an error and one that ends early
    leaves the missing rows black, both as through the plugin (tests/service/sanitize/
    test_plain_png.py)."""
    return Image.frombytes(png.mode, (png.width, png.height), png.data, "zip", png.mode)


def _load_first_frame(image: Image.Image, policy: ImagePolicy) -> Image.Image:
    if image.format == "JPEG":
        _, height, width = policy.input_shape
        side = max(height, width) * _DRAFT_OVERSAMPLE
        # Orientation may swap the axes later, so ask for a square that covers both.
        image.draft(image.mode, (side, side))
    image.load()
    return _reduce_early(image, policy)


def _reduce_early(image: Image.Image, policy: ImagePolicy) -> Image.Image:
    """Shrink a large decoded frame by an integer factor in its own mode (box filter), so
    that conversion and resizing copy a few times the model's input, not the file's claim."""
    _, height, width = policy.input_shape
    factor = min(
        image.width // (width * _DRAFT_OVERSAMPLE), image.height // (height * _DRAFT_OVERSAMPLE)
    )
    if factor < 2 or image.mode not in _REDUCIBLE_MODES:
        return image
    info = image.info
    reduced = image.reduce(factor)
    reduced.info = info  # keeps transparency and EXIF for the later steps
    return reduced


def _orientation(image: Image.Image) -> int:
    value = image.getexif().get(_EXIF_ORIENTATION, 1)
    return value if isinstance(value, int) else 1


def _colour_sample(image: Image.Image) -> Image.Image:
    """The image colour is judged on: itself, or an evenly spread sample of its pixels when
    it has more than ``_COLOUR_SAMPLE_PIXELS``."""
    if image.width * image.height <= _COLOUR_SAMPLE_PIXELS:
        return image
    scale = (_COLOUR_SAMPLE_PIXELS / (image.width * image.height)) ** 0.5
    size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
    return image.resize(size, Image.Resampling.NEAREST)


def _is_colourful(planes: np.ndarray) -> bool:
    """Whether RGB samples ((3, H, W) uint8) show colour, not grey stored as RGB (a drawing
    on a canvas, a scan, JPEG noise): at least ``COLOUR_MIN_FRACTION`` of the pixels have a
    chroma (largest channel minus smallest) of ``COLOUR_MIN_CHROMA`` or more."""
    # Plane by plane: numpy's reductions over a last axis of three cost several times
    # more than the whole PNG decode of a small upload (this runs on the event loop).
    red, green, blue = planes
    chroma = np.maximum(np.maximum(red, green), blue) - np.minimum(np.minimum(red, green), blue)
    return bool(np.count_nonzero(chroma >= COLOUR_MIN_CHROMA) >= COLOUR_MIN_FRACTION * chroma.size)
