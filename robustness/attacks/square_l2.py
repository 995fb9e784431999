"""Square (L2): random search over square-shaped updates, gradient-free, L2 ball.

Andriushchenko, Croce, Flammarion and Hein, "Square Attack: a query-efficient black-box
adversarial attack via random search" (arXiv 1912.00049). Norm: L2 (radius over the whole
image). Inputs in [0, 1]. Adapter over torchattacks' ``Square`` with ``norm="L2"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from robustness.attacks.square import Square


@dataclass(frozen=True)
class SquareL2(Square):
    name: ClassVar[str] = "square_l2"
    norm: ClassVar[str] = "l2"
