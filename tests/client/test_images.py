"""How the client turns what it is given into the bytes of an image file (no service)."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from client.images import array_png, image_bytes, media_type
from tests.client.conftest import ROOT


def decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return np.asarray(image)


def test_arrays_become_pngs_of_the_same_pixels() -> None:
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decoded(array_png(gray)), gray)
    np.testing.assert_array_equal(decoded(array_png(gray[:, :, None])), gray)
    np.testing.assert_array_equal(decoded(array_png(gray[None])), gray)  # (C, H, W)
    np.testing.assert_array_equal(decoded(array_png(rgb)), rgb)
    np.testing.assert_array_equal(decoded(array_png(rgb.transpose(2, 0, 1))), rgb)
    np.testing.assert_array_equal(decoded(array_png(gray / 255.0)), gray)
    np.testing.assert_array_equal(decoded(array_png(gray.astype(np.int64))), gray)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((2, 28, 28, 3), np.uint8), "must be"),
        (np.zeros((28, 28, 2), np.uint8), "must be"),
        (np.full((28, 28), 1.5), r"\[0, 1\]"),
        (np.full((28, 28), np.nan), r"\[0, 1\]"),
        (np.full((28, 28), 256), "0..255"),
        (np.zeros((28, 28), bool), "integers or floats"),
    ],
)
def test_arrays_that_are_no_image_are_refused(array, message) -> None:
    with pytest.raises(ValueError, match=message):
        array_png(array)


def test_files_and_bytes_are_sent_as_they_are() -> None:
    png = (ROOT / "samples" / "digit.png").read_bytes()
    assert image_bytes(png) == image_bytes(bytearray(png)) == png
    assert image_bytes(io.BytesIO(png)) == png
    assert media_type(png) == "image/png"
    assert media_type((ROOT / "samples" / "photo.jpg").read_bytes()) == "image/jpeg"
    assert media_type(b"anything else") == "application/octet-stream"
    with pytest.raises(TypeError, match="binary mode"):
        image_bytes(io.StringIO("text"))
    with pytest.raises(TypeError, match="cannot classify a dict"):
        image_bytes({})


def test_importing_the_client_imports_nothing_of_the_service_nor_numpy_or_pillow() -> None:
    code = (
        "import sys, client; "
        "bad = [m for m in ('service', 'models', 'numpy', 'PIL') if m in sys.modules]; "
        "print(bad)"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
