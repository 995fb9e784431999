"""APGD-T (L-inf): AutoAttack's APGD on the targeted DLR loss, one run per target class.

Croce and Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks" (arXiv 2003.01690). The difference-of-logits-ratio loss does not
depend on the logits' scale, so a model cannot hide behind saturated softmax outputs.
Norm: L-inf. Inputs in [0, 1]. Adapter over torchattacks' ``APGDT``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from robustness.attacks._torchattacks import (
    NORM_NAMES,
    call,
    next_seed,
    runner_up_targets,
    torchattacks_attack,
)
from robustness.attacks.base import ModelFn


@dataclass(frozen=True)
class APGDT:
    """A CPU budget (AutoAttack: 100 steps against each of the 9 runner-up classes): 50
    steps against each of the ``target_classes`` classes with the highest logits after
    the true one (all of them on a model with fewer classes). Samples fooled by one target
    are not attacked with the next."""

    steps: int = 50
    target_classes: int = 3
    restarts: int = 1
    rho: float = 0.75

    # Its targeted DLR loss divides by the top logit minus the 3rd and 4th.
    min_classes: ClassVar[int] = 4
    name: ClassVar[str] = "apgd_t"
    norm: ClassVar[str] = "linf"
    access: ClassVar[str] = "gradients"
    minimal: ClassVar[bool] = False

    def craft(self, model_fn: ModelFn, x: torch.Tensor, y: torch.Tensor, eps: float | None):
        with torch.no_grad():
            n_classes = model_fn(x[:1]).shape[1]
        targets = runner_up_targets(self.target_classes, n_classes)
        if n_classes < self.min_classes:  # the plan skips it; a direct call is refused
            raise ValueError(
                f"APGD-T's targeted DLR loss needs at least {self.min_classes} classes; "
                f"the model has {n_classes}"
            )
        attack = torchattacks_attack("APGDT")(
            model_fn,
            norm=NORM_NAMES[self.norm],
            eps=eps,
            steps=self.steps,
            n_restarts=self.restarts,
            seed=next_seed(),
            rho=self.rho,
            n_classes=n_classes,
        )
        attack.n_target_classes = targets  # the runner-up classes to try
        return call(attack, model_fn, x, y)
