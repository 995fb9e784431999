"""APGD-CE (L-inf): AutoAttack's step-size-free PGD on the cross-entropy loss.

Croce and Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks" (arXiv 2003.01690). Norm: L-inf. Inputs in [0, 1]. Adapter over
torchattacks' ``APGD`` with ``loss="ce"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from robustness.attacks._torchattacks import NORM_NAMES, call, next_seed, torchattacks_attack
from robustness.attacks.base import ModelFn


@dataclass(frozen=True)
class APGDCE:
    """AutoAttack's standard budget: 100 steps, one restart; the step size starts at 2·eps
    and halves when progress stalls (``rho`` is the stall test's threshold)."""

    steps: int = 100
    restarts: int = 1
    rho: float = 0.75

    name: ClassVar[str] = "apgd_ce"
    norm: ClassVar[str] = "linf"
    access: ClassVar[str] = "gradients"
    minimal: ClassVar[bool] = False
    loss: ClassVar[str] = "ce"

    def craft(self, model_fn: ModelFn, x: torch.Tensor, y: torch.Tensor, eps: float | None):
        attack = torchattacks_attack("APGD")(
            model_fn,
            norm=NORM_NAMES[self.norm],
            eps=eps,
            steps=self.steps,
            n_restarts=self.restarts,
            seed=next_seed(),
            loss=self.loss,
            rho=self.rho,
        )
        return call(attack, model_fn, x, y)
