"""The attack table: every attack the suite, the report and the tests know about.

Order matters: the runner executes attacks in this order, cheapest first, so a job cut
short by its time budget still has the cheap attacks done.
"""

from __future__ import annotations

from robustness.attacks.base import Attack, Norm
from robustness.attacks.bim import BIM
from robustness.attacks.cw_l2 import CarliniWagnerL2
from robustness.attacks.fgsm import FGSM
from robustness.attacks.hop_skip_jump import HopSkipJump
from robustness.attacks.noise import UniformNoise
from robustness.attacks.pgd import PGD
from robustness.attacks.pgd_l2 import PGDL2
from robustness.attacks.spsa import SPSA

ATTACKS: dict[str, Attack] = {
    attack.name: attack
    for attack in (
        UniformNoise(),
        FGSM(),
        BIM(),
        PGD(),
        PGDL2(),
        CarliniWagnerL2(),
        SPSA(),
        HopSkipJump(),
    )
}

__all__ = ["ATTACKS", "Attack", "Norm", "get_attack"]


def get_attack(name: str) -> Attack:
    try:
        return ATTACKS[name]
    except KeyError:
        raise ValueError(f"unknown attack {name!r}; valid attacks: {', '.join(ATTACKS)}") from None
