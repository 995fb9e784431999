"""FAB-T (L2): targeted Fast Adaptive Boundary attack, L2 ball.

Croce and Hein, "Minimally distorted adversarial examples with a fast adaptive boundary
attack" (arXiv 1907.02044), as AutoAttack's L2 standard version runs it (arXiv
2003.01690). Norm: L2 (radius over the whole image). Inputs in [0, 1]. Adapter over
torchattacks' ``FAB`` with ``norm="L2"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from robustness.attacks.fab_t import FABT


@dataclass(frozen=True)
class FABTL2(FABT):
    name: ClassVar[str] = "fab_t_l2"
    norm: ClassVar[str] = "l2"
