"""PGD (L2): normalised-gradient steps from a random start, projected onto the L2 ball.

Madry, Makelov, Schmidt, Tsipras and Vladu, "Towards Deep Learning Models Resistant to
Adversarial Attacks" (arXiv 1706.06083). Norm: L2 (radius over the whole image).
Inputs in [0, 1]. Adapter over cleverhans' ``projected_gradient_descent`` with ``norm=2``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from robustness.attacks.pgd import PGD


@dataclass(frozen=True)
class PGDL2(PGD):
    """Step = ``step_ratio`` * eps, as for L-inf PGD. cleverhans draws the random start
    uniformly in the L-inf cube of side eps and rescales it onto the L2 ball."""

    name: ClassVar[str] = "pgd_l2"
    norm: ClassVar[str] = "l2"
    order: ClassVar[float] = 2
