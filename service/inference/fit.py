"""Whether an upload clearly does not fit the model that classified it.

Any image is normalised to the model's input, so a colour photo sent to an MNIST model
comes back a confident digit. The answer is still given (the client may know better), but
with a warning for each clear mismatch, judged from what the upload was (its facts):

* ``colour_image_for_grey_model``: a one-channel model got an image that shows colour
  (``service.sanitize.imaging._is_colourful``; grey stored as RGB does not count);
* ``grey_image_for_colour_model``: a three-channel model got a file with no colour
  channels at all (a grey, bilevel or 16-bit grey file);
* ``much_larger_than_input``: the image had to be shrunk more than ``MAX_SHRINK`` times
  along a side (a photo for a 28 x 28 model);
* ``aspect_ratio_mismatch``: its aspect ratio differs from the model's by more than
  ``MAX_ASPECT_RATIO`` times (most of the input is padding, or the image is distorted).
"""

from __future__ import annotations

from typing import Any

MAX_SHRINK = 32
MAX_ASPECT_RATIO = 2.0
# File modes without colour channels (Pillow's names).
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


def fit_warnings(
    facts: dict[str, Any], input_shape: tuple[int, ...], model: str
) -> list[dict[str, str]]:
    """One ``{"code", "message"}`` per clear mismatch between the upload and the model."""
    channels, height, width = input_shape
    expects = f"model {model!r} takes {channels} x {height} x {width}"
    warnings = []
    if channels == 1 and facts.get("colour"):
        warnings.append(
            _warning(
                "colour_image_for_grey_model",
                f"the image is in colour but {expects} (grey): it was converted to grey",
            )
        )
    if channels == 3 and facts.get("mode") in GREY_MODES:
        warnings.append(
            _warning(
                "grey_image_for_colour_model",
                f"the image has no colour channels ({facts['mode']}) but {expects} (RGB)",
            )
        )
    image_width, image_height = facts.get("width", width), facts.get("height", height)
    shrink = max(image_width / width, image_height / height)
    if shrink > MAX_SHRINK:
        warnings.append(
            _warning(
                "much_larger_than_input",
                f"the image is {image_width} x {image_height} but {expects}: "
                f"it was shrunk {shrink:.0f} times",
            )
        )
    ratio = (image_width / image_height) / (width / height)
    if max(ratio, 1 / ratio) > MAX_ASPECT_RATIO:
        warnings.append(
            _warning(
                "aspect_ratio_mismatch",
                f"the image is {image_width} x {image_height} but {expects}: its aspect "
                f"ratio differs {max(ratio, 1 / ratio):.1f} times",
            )
        )
    return warnings


def _warning(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}
