"""The warnings an answer carries when the upload clearly does not fit the model."""

from __future__ import annotations

import pytest

from service.inference.fit import fit_warnings

MNIST, CIFAR = (1, 28, 28), (3, 32, 32)


def codes(facts: dict, shape: tuple[int, int, int]) -> list[str]:
    return [warning["code"] for warning in fit_warnings(facts, shape, "m")]


@pytest.mark.parametrize(
    ("facts", "shape", "expected"),
    [
        ({"mode": "L", "width": 28, "height": 28, "colour": False}, MNIST, []),
        ({"mode": "RGBA", "width": 280, "height": 280, "colour": False}, MNIST, []),
        ({"mode": "RGB", "width": 640, "height": 480, "colour": True}, MNIST, ["colour"]),
        ({"mode": "RGB", "width": 32, "height": 32, "colour": True}, CIFAR, []),
        ({"mode": "L", "width": 32, "height": 32, "colour": False}, CIFAR, ["grey"]),
        ({"mode": "I;16", "width": 32, "height": 32, "colour": False}, CIFAR, ["grey"]),
        ({"mode": "RGB", "width": 896, "height": 896, "colour": False}, MNIST, []),
        ({"mode": "RGB", "width": 897, "height": 897, "colour": False}, MNIST, ["larger"]),
        ({"mode": "L", "width": 56, "height": 28, "colour": False}, MNIST, []),
        ({"mode": "L", "width": 57, "height": 28, "colour": False}, MNIST, ["aspect"]),
        ({"mode": "L", "width": 28, "height": 57, "colour": False}, MNIST, ["aspect"]),
    ],
)
def test_each_clear_mismatch_is_named_and_nothing_else(facts, shape, expected) -> None:
    short = {
        "colour_image_for_grey_model": "colour",
        "grey_image_for_colour_model": "grey",
        "much_larger_than_input": "larger",
        "aspect_ratio_mismatch": "aspect",
    }
    assert [short[code] for code in codes(facts, shape)] == expected


def test_a_warning_says_what_the_model_takes() -> None:
    (warning,) = fit_warnings({"mode": "RGB", "width": 9, "height": 9, "colour": True}, MNIST, "x")
    assert warning["message"] == (
        "the image is in colour but model 'x' takes 1 x 28 x 28 (grey): it was converted to grey"
    )
