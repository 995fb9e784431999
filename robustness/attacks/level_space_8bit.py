"""Level space on the 8-bit grid: the exact level-space attack, whole intensity steps only.

The service receives 8-bit images, so an attacker with budget eps can only move a pixel by
floor(255 * eps) steps of 1/255, and every crafted image is itself an 8-bit image. Same
search as ``level`` (``level_space.py``, our attack after Athalye, Carlini and Wagner,
arXiv 1802.00420) over the smaller box. Norm: L-inf. Inputs in [0, 1], expected on the
8-bit grid (k / 255); a pixel off the grid keeps its level.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from robustness.attacks.level_space import LevelSpace


@dataclass(frozen=True)
class LevelSpace8Bit(LevelSpace):
    name: ClassVar[str] = "level_8bit"
    grid: ClassVar[bool] = True
