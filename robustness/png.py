"""Images in [0, 1] as 8-bit levels and PNG: the one encoder the reports and the service share.

Only numpy and Pillow: the service's decode worker process uses ``to_levels`` and must
not load torch.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image


def to_levels(pixels: np.ndarray) -> np.ndarray:
    """Floats in [0, 1] -> uint8 levels 0..255, rounded to nearest, same shape."""
    return np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)


def encode_png(pixels: np.ndarray, optimize: bool = False) -> bytes:
    """(C, H, W) in [0, 1] -> PNG bytes (grey for one channel, RGB for three).

    ``optimize`` spends more time for fewer bytes: worth it for images stored in reports,
    not for ones encoded per request."""
    levels = to_levels(pixels)
    array = levels[0] if levels.shape[0] == 1 else levels.transpose(1, 2, 0)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", optimize=optimize)
    return buffer.getvalue()


def png_base64(pixels: np.ndarray, optimize: bool = False) -> str:
    """``encode_png`` as base64 text, for a JSON field."""
    return base64.b64encode(encode_png(pixels, optimize)).decode("ascii")
