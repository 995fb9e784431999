"""How any decoded image becomes a model's input: the one fitting policy.

The service fits every upload with it (``service/sanitize/imaging.py``) and training fits
every image of an image folder with it (``training/imagefolder.py``), so a model sees at
serving time what it was trained on. The policy (docs/service.md, docs/models.md):

* Transparency (alpha channels, palette or colour-key transparency) is composited onto the
  background grey level (0, black, unless the service is told otherwise).
* Palette, bilevel, CMYK, YCbCr and 16-bit inputs become 8-bit grey (1-channel models) or
  RGB (3-channel models); 16-bit samples keep their top 8 bits.
* Resizing to the model's input size: ``letterbox`` (the default) scales the image to fit
  inside the target with its aspect ratio kept, centred, and pads the rest with the
  background; ``stretch`` scales each axis independently. Shrinking uses an area (box)
  filter, enlarging a bilinear one; an image already at the target size is untouched.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

RESIZE_POLICIES = ("letterbox", "stretch")
ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
WIDE_GREY_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
GREY_MODES = frozenset({"1", "L", "LA", "F", *WIDE_GREY_MODES})


def to_channels(image: Image.Image, channels: int, background: int = 0) -> Image.Image:
    """Any mode -> 8-bit "L" (1 channel) or "RGB" (3 channels), transparency composited;
    an image already in that mode is returned as it is, not copied."""
    if channels not in (1, 3):
        raise ValueError(f"images decode to 1 (grey) or 3 (RGB) channels, not {channels}")
    if image.mode in WIDE_GREY_MODES:
        # The top 8 bits of a 16-bit sample; Pillow's own conversion would clip instead.
        wide = np.asarray(image)
        if wide.dtype != np.uint16:  # mode "I": 32-bit signed, clip into 16 bits first
            wide = np.clip(wide, 0, 65535).astype(np.uint16)
        image = Image.fromarray((wide >> 8).astype(np.uint8))
    if image.mode in ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        backdrop = Image.new("RGBA", rgba.size, (background, background, background, 255))
        image = Image.alpha_composite(backdrop, rgba)
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    mode = "L" if channels == 1 else "RGB"
    return image if image.mode == mode else image.convert(mode)


def fit(
    image: Image.Image,
    height: int,
    width: int,
    policy: str = "letterbox",
    background: int = 0,
) -> tuple[Image.Image, bool]:
    """``image`` ("L" or "RGB") at (height, width) by ``policy``; and whether it was resized."""
    if image.size == (width, height):
        return image, False
    if policy == "stretch":
        return resize(image, width, height), True
    if policy != "letterbox":
        raise ValueError(f"unknown resize policy {policy!r}; valid: {', '.join(RESIZE_POLICIES)}")
    scale = min(width / image.width, height / image.height)
    fitted_w = max(1, min(width, round(image.width * scale)))
    fitted_h = max(1, min(height, round(image.height * scale)))
    fitted = resize(image, fitted_w, fitted_h)
    fill = background if image.mode == "L" else (background,) * 3
    canvas = Image.new(image.mode, (width, height), fill)
    canvas.paste(fitted, ((width - fitted_w) // 2, (height - fitted_h) // 2))
    return canvas, True


def resize(image: Image.Image, width: int, height: int) -> Image.Image:
    """Box filter when shrinking (both sides), bilinear otherwise."""
    if width <= image.width and height <= image.height:
        return image.resize((width, height), Image.Resampling.BOX, reducing_gap=2.0)
    return image.resize((width, height), Image.Resampling.BILINEAR)


def to_array(image: Image.Image) -> np.ndarray:
    """An "L" or "RGB" image -> (C, H, W) uint8."""
    pixels = np.asarray(image, dtype=np.uint8)
    # (H, W) -> (1, H, W); (H, W, C) -> (C, H, W)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
