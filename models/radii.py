"""Radii as people write them: ``0.3``, ``8/255``, ``2.5/255``.

Training (``--adv-epsilon``) and the robustness suite (``--epsilons``, the admin API) both take
radii in pixel units; this is the one parser they share. A fraction is parsed, never evaluated.
"""

from __future__ import annotations

import math


def parse_fraction(text: str) -> float:
    """``"8/255"`` -> 0.0313..., ``"2.5/255"`` -> 0.0098..., ``"0.3"`` -> 0.3.

    Raises ``ValueError`` for anything else (empty parts, more than one ``/``, a zero
    denominator, words)."""
    numerator, slash, denominator = text.strip().partition("/")
    try:
        value = float(numerator) / (float(denominator) if slash else 1.0)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"not a number or fraction such as 0.3 or 8/255: {text[:32]!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"not a finite radius: {text[:32]!r}")
    return value
