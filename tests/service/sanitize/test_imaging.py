"""Decoding and normalisation: formats, modes, orientation, transparency, resizing."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from robustness.png import encode_png
from service.errors import CorruptImage, ImageTooLarge, ServiceError, UnsupportedFormat
from service.sanitize.imaging import (
    COLOUR_MIN_CHROMA,
    COLOUR_MIN_FRACTION,
    ImagePolicy,
    decode_image,
    identify_format,
)
from tests.service.helpers.images import (
    accepted_cases,
    encode,
    gif_animated,
    png_16bit,
    png_claiming,
    rejected_cases,
)

MNIST = ImagePolicy(input_shape=(1, 28, 28), max_pixels=4096 * 4096, max_side=8192)
CIFAR = ImagePolicy(input_shape=(3, 32, 32), max_pixels=4096 * 4096, max_side=8192)


def grey(array: np.ndarray) -> bytes:
    return encode(Image.fromarray(array.astype(np.uint8)), "PNG")


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        (b"\x89PNG\r\n\x1a\n", "PNG"),
        (b"\xff\xd8\xff\xe0", "JPEG"),
        (b"GIF87a", "GIF"),
        (b"GIF89a", "GIF"),
        (b"RIFF\x00\x00\x00\x00WEBP", "WEBP"),
        (b"BM", "BMP"),
    ],
)
def test_format_comes_from_the_signature(prefix: bytes, expected: str) -> None:
    assert identify_format(prefix + b"\x00" * 16) == expected


@pytest.mark.parametrize(
    "data", [b"", b"II*\x00", b"\x00\x00\x01\x00", b"RIFF\x00\x00\x00\x00WAVE"]
)
def test_other_signatures_are_unsupported(data: bytes) -> None:
    with pytest.raises(UnsupportedFormat):
        identify_format(data)


@pytest.mark.parametrize("case", accepted_cases(), ids=repr)
def test_accepted_uploads_become_model_inputs(case) -> None:
    decoded = decode_image(case.body, MNIST)
    assert decoded.pixels.shape == (1, 28, 28)
    assert decoded.pixels.dtype == np.float32
    assert decoded.pixels.min() >= 0.0 and decoded.pixels.max() <= 1.0


@pytest.mark.parametrize(
    "case", [c for c in rejected_cases() if c.reason not in ("empty_body", "body_too_large")],
    ids=repr,
)  # fmt: skip
def test_rejected_uploads_raise_the_expected_error(case) -> None:
    with pytest.raises(ServiceError) as caught:
        decode_image(case.body, MNIST)
    assert (caught.value.status, caught.value.reason) == (case.status, case.reason)


def test_exact_size_grey_png_is_kept_bit_for_bit() -> None:
    array = np.random.default_rng(0).integers(0, 256, (28, 28))
    decoded = decode_image(grey(array), MNIST)
    np.testing.assert_array_equal(decoded.pixels[0], (array / 255.0).astype(np.float32))
    assert decoded.facts["resized"] is False


def test_exif_orientation_is_applied() -> None:
    array = np.zeros((28, 28), dtype=np.uint8)
    array[0, 0] = 255  # a marker in the top-left corner as stored
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 3  # stored upside down: displaying it needs a 180-degree turn
    decoded = decode_image(encode(image, "PNG", exif=exif), MNIST)
    assert decoded.facts["orientation"] == 3
    assert decoded.pixels[0, 27, 27] == 1.0 and decoded.pixels[0, 0, 0] == 0.0


def test_animated_gif_uses_the_first_frame() -> None:
    decoded = decode_image(gif_animated(), MNIST)
    assert decoded.facts["animated"] is True
    assert decoded.pixels.max() == 1.0  # the first frame has the white bar; the second is black


def test_transparency_is_composited_on_the_background() -> None:
    white_but_transparent = Image.new("RGBA", (28, 28), (255, 255, 255, 0))
    on_black = decode_image(encode(white_but_transparent, "PNG"), MNIST)
    assert on_black.pixels.max() == 0.0
    on_grey = ImagePolicy((1, 28, 28), 4096 * 4096, 8192, background=128)
    assert np.allclose(
        decode_image(encode(white_but_transparent, "PNG"), on_grey).pixels, 128 / 255
    )


def test_palette_colour_key_transparency_is_composited() -> None:
    image = Image.new("P", (28, 28), 1)
    image.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    decoded = decode_image(encode(image, "PNG", transparency=1), MNIST)
    assert decoded.pixels.max() == 0.0


def test_16_bit_samples_keep_their_top_bits() -> None:
    decoded = decode_image(png_16bit(), MNIST)
    assert decoded.facts["mode"] == "I;16"
    assert decoded.pixels.max() == 1.0 and decoded.pixels.min() == 0.0
    half = np.full((28, 28), 32768, dtype=np.uint16)
    assert np.allclose(decode_image(encode(Image.fromarray(half), "PNG"), MNIST).pixels, 128 / 255)


def test_cmyk_jpeg_becomes_grey() -> None:
    white = Image.new("CMYK", (28, 28), (0, 0, 0, 0))
    decoded = decode_image(encode(white, "JPEG", quality=95), MNIST)
    assert decoded.pixels.min() > 0.95


def test_grey_input_fills_every_channel_of_a_colour_model() -> None:
    decoded = decode_image(grey(np.full((32, 32), 200)), CIFAR)
    assert decoded.pixels.shape == (3, 32, 32)
    assert np.allclose(decoded.pixels, 200 / 255)


def test_letterbox_keeps_aspect_ratio_and_pads_with_background() -> None:
    decoded = decode_image(grey(np.full((28, 56), 255)), MNIST)  # twice as wide as tall
    rows = decoded.pixels[0].mean(axis=1)
    assert decoded.facts["resized"] is True
    assert np.all(rows[7:21] == 1.0) and np.all(rows[:7] == 0.0) and np.all(rows[21:] == 0.0)


def test_stretch_fills_the_whole_input() -> None:
    policy = ImagePolicy((1, 28, 28), 4096 * 4096, 8192, resize_policy="stretch")
    assert np.all(decode_image(grey(np.full((28, 56), 255)), policy).pixels == 1.0)


def test_small_images_are_enlarged() -> None:
    decoded = decode_image(grey(np.full((14, 14), 255)), MNIST)
    assert decoded.pixels.shape == (1, 28, 28) and decoded.pixels.min() == 1.0


def test_large_jpeg_is_decoded_at_reduced_scale() -> None:
    photo = Image.new("RGB", (2400, 1800), (255, 255, 255))
    decoded = decode_image(encode(photo, "JPEG"), MNIST)
    assert decoded.facts["width"] == 2400  # the upload's own size is reported
    assert decoded.pixels[0, 14, :].min() > 0.95


def test_limits_are_checked_before_decoding() -> None:
    tight = ImagePolicy((1, 28, 28), max_pixels=100, max_side=8192)
    with pytest.raises(ImageTooLarge):
        decode_image(grey(np.zeros((11, 10))), tight)
    with pytest.raises(ImageTooLarge):
        decode_image(png_claiming(50_000, 50_000), MNIST)


def test_truncated_data_is_corrupt() -> None:
    data = grey(np.random.default_rng(1).integers(0, 256, (28, 28)))
    for cut in (len(data) // 3, len(data) // 2, len(data) * 3 // 4):
        with pytest.raises(CorruptImage):
            decode_image(data[:cut], MNIST)


def test_encode_png_round_trips() -> None:
    levels = np.random.default_rng(2).integers(0, 256, (3, 5, 7))
    image = Image.open(io.BytesIO(encode_png(levels.astype(np.float32) / 255)))
    assert image.mode == "RGB" and image.size == (7, 5)
    np.testing.assert_array_equal(np.asarray(image).transpose(2, 0, 1), levels)


def _colour_of(image: Image.Image, fmt: str = "PNG", policy: ImagePolicy = MNIST) -> bool:
    return decode_image(encode(image, fmt), policy).facts["colour"]


def test_colour_is_told_from_grey_stored_as_colour() -> None:
    rng = np.random.default_rng(0)
    grey_pixels = rng.integers(0, 256, (280, 280), dtype=np.uint8)
    grey_as_rgb = Image.fromarray(np.repeat(grey_pixels[..., None], 3, axis=2))
    # A drawing pad's canvas: white strokes on a transparent RGBA canvas.
    canvas = np.zeros((280, 280, 4), np.uint8)
    canvas[100:180, 130:150] = (255, 255, 255, 255)
    colour = np.zeros((240, 320, 3), np.uint8)
    colour[..., 0] = np.linspace(0, 255, 320, dtype=np.uint8)[None]
    colour[..., 2] = 90
    assert not _colour_of(Image.fromarray(grey_pixels))
    assert not _colour_of(grey_as_rgb)
    assert not _colour_of(grey_as_rgb, "JPEG")  # chroma noise from compression
    assert not _colour_of(Image.fromarray(canvas, "RGBA"))
    assert _colour_of(Image.fromarray(colour))
    assert _colour_of(Image.fromarray(colour), "JPEG", CIFAR)
    # A large photo is judged on a sample of its pixels, the same way.
    assert _colour_of(Image.fromarray(colour).resize((3200, 2400)), "JPEG")


@pytest.mark.parametrize(
    ("chroma", "coloured", "expected"),
    [
        (COLOUR_MIN_CHROMA, 20, True),  # 20 of 400 pixels: exactly the fraction
        (COLOUR_MIN_CHROMA, 19, False),  # one pixel short of it
        (COLOUR_MIN_CHROMA - 1, 400, False),  # every pixel, each one level short of the chroma
        (255, 19, False),
    ],
)
def test_colour_thresholds_are_inclusive(chroma: int, coloured: int, expected: bool) -> None:
    """At least ``COLOUR_MIN_FRACTION`` of the pixels with a chroma of at least
    ``COLOUR_MIN_CHROMA`` (largest channel minus smallest, whichever channels they are)."""
    assert COLOUR_MIN_FRACTION * 400 == 20
    pixels = np.full((20, 20, 3), 100, np.uint8)
    flat = pixels.reshape(-1, 3)
    for index in range(coloured):  # the largest and smallest channel vary from pixel to pixel
        high, low = index % 3, (index + 1) % 3
        flat[index, high] = min(255, 100 + chroma)
        flat[index, low] = flat[index, high] - chroma
    assert _colour_of(Image.fromarray(pixels)) is expected
