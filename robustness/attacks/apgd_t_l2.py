"""APGD-T (L2): AutoAttack's APGD on the targeted DLR loss, L2 ball.

Croce and Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks" (arXiv 2003.01690). Norm: L2 (radius over the whole image).
Inputs in [0, 1]. Adapter over torchattacks' ``APGDT`` with ``norm="L2"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from robustness.attacks.apgd_t import APGDT


@dataclass(frozen=True)
class APGDTL2(APGDT):
    name: ClassVar[str] = "apgd_t_l2"
    norm: ClassVar[str] = "l2"
