"""The attack table: every attack the suite, the report and the tests know about.

Order matters: the runner executes attacks in this order, cheapest first, so a job cut
short by its time budget still has the cheap attacks done.
"""

from __future__ import annotations

from robustness.attacks.apgd_ce import APGDCE
from robustness.attacks.apgd_ce_l2 import APGDCEL2
from robustness.attacks.apgd_t import APGDT
from robustness.attacks.apgd_t_l2 import APGDTL2
from robustness.attacks.base import Attack, Norm
from robustness.attacks.bim import BIM
from robustness.attacks.cw_l2 import CarliniWagnerL2
from robustness.attacks.fab_t import FABT
from robustness.attacks.fab_t_l2 import FABTL2
from robustness.attacks.fgsm import FGSM
from robustness.attacks.hop_skip_jump import HopSkipJump
from robustness.attacks.level_space import LevelSpace
from robustness.attacks.level_space_8bit import LevelSpace8Bit
from robustness.attacks.noise import UniformNoise
from robustness.attacks.pgd import PGD
from robustness.attacks.pgd_l2 import PGDL2
from robustness.attacks.spsa import SPSA
from robustness.attacks.square import Square
from robustness.attacks.square_l2 import SquareL2

ATTACKS: dict[str, Attack] = {
    attack.name: attack
    for attack in (
        UniformNoise(),
        FGSM(),
        BIM(),
        PGD(),
        PGDL2(),
        APGDCE(),
        APGDCEL2(),
        LevelSpace(),
        LevelSpace8Bit(),
        APGDT(),
        APGDTL2(),
        FABT(),
        FABTL2(),
        CarliniWagnerL2(),
        Square(),
        SquareL2(),
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
