"""The one radius parser that training and the robustness suite share."""

from __future__ import annotations

import pytest

from models.radii import parse_fraction


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0.3", 0.3),
        (" 8/255 ", 8 / 255),
        ("2.5/255", 2.5 / 255),
        ("255/255", 1.0),
        ("1e-2", 0.01),
        ("0", 0.0),
    ],
)
def test_decimals_and_fractions_parse(text: str, value: float) -> None:
    assert parse_fraction(text) == pytest.approx(value, rel=0, abs=1e-15)


@pytest.mark.parametrize(
    "text",
    ["", "/", "8/", "/255", "8/0", "1/2/3", "eight", "__import__('os')", "nan", "inf", "1e400"],
)
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="0.3 or 8/255|finite"):
        parse_fraction(text)
