"""APGD-CE (L2): AutoAttack's step-size-free PGD on the cross-entropy loss, L2 ball.

Croce and Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks" (arXiv 2003.01690). Norm: L2 (radius over the whole image).
Inputs in [0, 1]. Adapter over torchattacks' ``APGD`` with ``norm="L2"``, ``loss="ce"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from robustness.attacks.apgd_ce import APGDCE


@dataclass(frozen=True)
class APGDCEL2(APGDCE):
    name: ClassVar[str] = "apgd_ce_l2"
    norm: ClassVar[str] = "l2"
