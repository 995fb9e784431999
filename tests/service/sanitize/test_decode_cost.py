"""The decode cost estimated from headers, and the ceiling it meets before any decoding."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from service.errors import UnsupportedFormat
from service.sanitize.decode_cost import estimate
from tests.service.helpers.admin import AUTH
from tests.service.helpers.hostile_files import (
    SIDE,
    apng_canvas,
    png_16bit_canvas,
    png_rgba16_canvas,
    progressive_jpeg_scans,
    webp_canvas,
)
from tests.service.helpers.images import digit, encode

PIXELS = SIDE * SIDE


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("32-scan progressive grey JPEG", progressive_jpeg_scans(32), PIXELS * 32),
        ("16-bit RGBA PNG", png_rgba16_canvas(), PIXELS * 4 * 2),
        ("200-frame APNG", apng_canvas(200), PIXELS * 200),
        ("lossless WebP", webp_canvas(), PIXELS * 3),
        ("16-bit grey PNG", png_16bit_canvas(), PIXELS * 2),
        ("RGB BMP", encode(digit((100, 50), "RGB"), "BMP"), 100 * 50 * 3),
        ("palette PNG", encode(digit((64, 64)).convert("P"), "PNG"), 64 * 64),
        ("baseline 4:2:0 JPEG", encode(digit((640, 480), "RGB"), "JPEG"), 640 * 480 * 3 // 2),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_the_cost_is_samples_times_depth_times_frames_and_scans(name, data, expected) -> None:
    cost = estimate(data)
    assert cost is not None and cost.bytes == expected, cost


def test_a_progressive_jpeg_counts_each_scan_over_the_components_it_codes() -> None:
    # libjpeg's progressive script: 10 scans, most over one component, chroma at a quarter.
    cost = estimate(encode(digit((640, 480), "RGB"), "JPEG", progressive=True))
    assert cost is not None and cost.scans == 10
    assert 4 * 640 * 480 < cost.bytes < 10 * 640 * 480  # not 10 scans x 3 full components


def test_webp_alpha_and_animation_count() -> None:
    noise = np.random.default_rng(0).integers(0, 256, (40, 40, 4), dtype=np.uint8)
    with_alpha = estimate(encode(Image.fromarray(noise, "RGBA"), "WEBP", lossless=True))
    assert with_alpha is not None and with_alpha.bytes == 40 * 40 * 4
    frames = [Image.fromarray(np.roll(noise, i, axis=0)[..., :3]) for i in range(3)]
    animated = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    cost = estimate(animated)
    assert cost is not None and cost.bytes == 40 * 40 * 3 * 3


def test_an_animated_gif_counts_its_frames() -> None:
    frames = [digit().convert("P"), Image.new("P", (28, 28), 0), digit().convert("P")]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    cost = estimate(data)
    assert cost is not None and cost.bytes == 28 * 28 * 3


def test_an_unreadable_header_gives_no_estimate_and_a_foreign_format_is_refused() -> None:
    assert estimate(b"\x89PNG\r\n\x1a\n<html>") is None
    assert estimate(b"\xff\xd8\xff") is None
    with pytest.raises(UnsupportedFormat):
        estimate(b"%PDF-1.4")


# --- the anonymous ceiling, in the app --------------------------------------------------------


BOMBS = {
    "jpeg-32-scans": progressive_jpeg_scans(32),
    "png-rgba16": png_rgba16_canvas(),
    "apng-200-frames": apng_canvas(200),
}


@pytest.mark.parametrize("name", BOMBS)
def test_anonymous_uploads_over_the_ceiling_are_refused_before_decoding(
    queue_only_admin, name: str
) -> None:
    client = queue_only_admin(max_body_bytes=5 << 20)
    refused = client.post("/classify", content=BOMBS[name])
    assert refused.status_code == 413
    assert refused.json()["reason"] == "decode_cost_too_high"
    assert "67108864" in refused.json()["error"]  # the ceiling, stated
    assert client.app.state.pool.decode_workers.pids() == []  # no worker was needed
    # The same file with the admin token is decoded.
    accepted = client.post("/classify", content=BOMBS[name], headers=AUTH)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["input"]["width"] == SIDE


def test_the_anonymous_ceiling_is_a_setting(serve) -> None:
    client = serve(anonymous_max_decode_cost_bytes=PIXELS * 3 - 1)
    assert client.post("/classify", content=webp_canvas()).json()["reason"] == (
        "decode_cost_too_high"
    )
    wide = serve(anonymous_max_decode_cost_bytes=PIXELS * 3)
    answer = wide.post("/classify", content=webp_canvas())
    assert answer.status_code == 200, answer.text
