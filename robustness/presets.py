"""Per-dataset radii and the reproduction's budget: the numbers docs/results.md cites.

MNIST radii are the paper's 0.1/0.2/0.3 (L-inf); CIFAR-10's are 2/255, 4/255, 8/255. The L2
radii are ours (the paper reports no L2 table): 1, 2, 3 on MNIST's 28x28 and 0.25, 0.5, 1.0
on CIFAR-10's 3x32x32, the range where undefended models fall and robust ones are quoted.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetPreset:
    epsilons: tuple[float, ...]
    l2_epsilons: tuple[float, ...]


PRESETS: dict[str, DatasetPreset] = {
    "mnist": DatasetPreset((0.1, 0.2, 0.3), (1.0, 2.0, 3.0)),
    "cifar10": DatasetPreset((2 / 255, 4 / 255, 8 / 255), (0.25, 0.5, 1.0)),
}


def preset(dataset: str) -> DatasetPreset:
    try:
        return PRESETS[dataset]
    except KeyError:
        raise ValueError(
            f"no preset for dataset {dataset!r}; known: {', '.join(PRESETS)}"
        ) from None


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
