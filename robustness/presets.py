"""Per-dataset radii, the reproduction's budget, and named attack sets.

The radii and the reproduction's budget are the numbers docs/results.md cites. An attack
set (``ATTACK_SETS``) is a named list of attacks with the budgets that define it: the
``standard`` set is AutoAttack's standard version, and every report row says whether it
came from that set run at those budgets or from the rest of the suite.

MNIST radii are the paper's 0.1/0.2/0.3 (L-inf); CIFAR-10's are 2/255, 4/255, 8/255. The L2
radii are ours (the paper reports no L2 table): 1, 2, 3 on MNIST's 28x28 and 0.25, 0.5, 1.0
on CIFAR-10's 3x32x32, the range where undefended models fall and robust ones are quoted.

Any other dataset (your own images, an imported program) gets the generic preset for its
input shape (``generic_preset``): the natural-image L-inf radii 2/255, 4/255, 8/255, and
CIFAR-10's L2 radii scaled by sqrt(C*H*W / 3072), so a radius keeps its per-pixel size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DatasetPreset:
    epsilons: tuple[float, ...]
    l2_epsilons: tuple[float, ...]


PRESETS: dict[str, DatasetPreset] = {
    "mnist": DatasetPreset((0.1, 0.2, 0.3), (1.0, 2.0, 3.0)),
    "cifar10": DatasetPreset((2 / 255, 4 / 255, 8 / 255), (0.25, 0.5, 1.0)),
}


# Natural images' L-inf radii (CIFAR-10's, and ImageNet's usual 4/255); the L2 radii of the
# generic preset are CIFAR-10's at its 3 * 32 * 32 values, scaled to the input's size.
GENERIC_EPSILONS = (2 / 255, 4 / 255, 8 / 255)
_CIFAR10_VALUES = 3 * 32 * 32


def generic_preset(input_shape: tuple[int, ...]) -> DatasetPreset:
    """Radii for a dataset without a preset, from its (C, H, W)."""
    scale = math.sqrt(math.prod(input_shape) / _CIFAR10_VALUES)
    l2 = tuple(float(f"{r * scale:.3g}") for r in PRESETS["cifar10"].l2_epsilons)
    return DatasetPreset(GENERIC_EPSILONS, l2)


def preset(dataset: str, input_shape: tuple[int, ...] | None = None) -> DatasetPreset:
    """The dataset's own preset, else the generic one for ``input_shape``."""
    if dataset in PRESETS:
        return PRESETS[dataset]
    if input_shape:
        return generic_preset(input_shape)
    raise ValueError(
        f"no preset for dataset {dataset!r} and no input shape to derive one from; "
        f"known: {', '.join(PRESETS)}"
    )


# The paper's attacks (FGSM, BIM, PGD, CW-L2), both cleverhans gradient-free ones, the
# noise floor, and the stronger attacks: AutoAttack's APGD-CE, APGD-T and Square (L-inf and
# L2) and the exact level-space attack (continuous and 8-bit). PGD-L2 is left to
# ``evaluate``.
REPRODUCTION_ATTACKS = (
    "noise",
    "fgsm",
    "bim",
    "pgd",
    "apgd_ce",
    "apgd_ce_l2",
    "level",
    "level_8bit",
    "apgd_t",
    "apgd_t_l2",
    "cw_l2",
    "square",
    "square_l2",
    "spsa",
    "hsj",
)
# Every attack runs on every sample. The query attacks are most of the cost: on a 2-core
# CPU, SPSA takes 0.6 s (idle, 2 threads) to 1.8 s (shared, 1 thread) per image and
# radius, HopSkipJump about 1.5 s per image (shared, 1 thread), Square about 3.5 s per
# image and radius (shared, 1 thread; the level-space attacks and APGD-T about 1 s).
# ``--limit`` caps them (the first k samples) for a quicker look; report rows state their
# sample counts.
REPRODUCTION_SAMPLE_LIMITS: dict[str, int] = {}
REPRODUCTION_ATTACK_PARAMS: dict[str, dict] = {}


# The set every row belongs to that is not a named set run at that set's budget.
SUITE = "suite"


@dataclass(frozen=True)
class AttackSet:
    """A named attack set: its attacks, the parameters that define it (``params`` are
    overrides of the attacks' defaults, checked against every row's attack parameters),
    and the threat models it runs under (``bpda`` stands for the adaptive white-box
    attacker: on a model without a quantizer, where BPDA equals naive white-box, it runs
    as ``naive``)."""

    name: str
    source: str
    attacks: tuple[str, ...]
    params: Mapping[str, Mapping[str, Any]]
    threat_models: tuple[str, ...]

    def threat_models_for(self, quantized: bool) -> tuple[str, ...]:
        if quantized:
            return self.threat_models
        return tuple(dict.fromkeys("naive" if t == "bpda" else t for t in self.threat_models))

    def defines(self, attack: str, params: Mapping[str, Any]) -> bool:
        """Whether an attack that ran with ``params`` is this set's ``attack`` at its budget."""
        wanted = self.params.get(attack)
        return (
            attack in self.attacks
            and wanted is not None
            and all(params.get(key) == value for key, value in wanted.items())
        )


# AutoAttack's standard version (Croce and Hein 2020, arXiv 2003.01690; ``set_version
# ("standard")`` in their code), L-inf and L2 alike: APGD-CE without restarts, 100
# iterations; APGD-T, 100 iterations against each of 9 target classes; FAB-T, 100
# iterations against each of 9 target classes; Square with 5,000 queries on its
# unrescaled schedule, p_init 0.8. The four run through BPDA when a quantizer is in front,
# Square queries the deployed model. (torchattacks 3.5.1's own ``AutoAttack(version=
# "standard")`` leaves APGD-T and FAB at 10 iterations, so the budgets are set here.)
_APGD = {"steps": 100, "restarts": 1, "rho": 0.75}
_APGD_T = {**_APGD, "target_classes": 9}
_FAB_T = {"steps": 100, "target_classes": 9, "restarts": 1}
_SQUARE = {"queries": 5000, "restarts": 1, "p_init": 0.8, "rescale_schedule": False}
STANDARD = AttackSet(
    name="standard",
    source="AutoAttack, standard version (Croce and Hein 2020, arXiv 2003.01690)",
    attacks=(
        "apgd_ce",
        "apgd_t",
        "fab_t",
        "square",
        "apgd_ce_l2",
        "apgd_t_l2",
        "fab_t_l2",
        "square_l2",
    ),
    params={
        "apgd_ce": _APGD,
        "apgd_t": _APGD_T,
        "fab_t": _FAB_T,
        "square": _SQUARE,
        "apgd_ce_l2": _APGD,
        "apgd_t_l2": _APGD_T,
        "fab_t_l2": _FAB_T,
        "square_l2": _SQUARE,
    },
    threat_models=("bpda", "gradient_free"),
)
ATTACK_SETS: dict[str, AttackSet] = {STANDARD.name: STANDARD}


def attack_set(name: str) -> AttackSet:
    try:
        return ATTACK_SETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(ATTACK_SETS)}") from None


def attack_set_of(attack: str, params: Mapping[str, Any]) -> str:
    """The named set a row of ``attack`` run with ``params`` belongs to, else ``SUITE``."""
    for named in ATTACK_SETS.values():
        if named.defines(attack, params):
            return named.name
    return SUITE
