"""FAB-T (L-inf): targeted Fast Adaptive Boundary attack, AutoAttack's third component.

Croce and Hein, "Minimally distorted adversarial examples with a fast adaptive boundary
attack" (arXiv 1907.02044), run as in "Reliable evaluation of adversarial robustness with
an ensemble of diverse parameter-free attacks" (arXiv 2003.01690): one run per target
class, the runner-up classes in turn. FAB steps to the projection onto the linearised
decision boundary of the target class, so it needs no step size and does not read the
loss: a model that saturates its softmax cannot hide from it. Norm: L-inf. Inputs in
[0, 1]. Adapter over torchattacks' ``FAB`` with ``multi_targeted=True``.
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
class FABT:
    """A CPU budget (AutoAttack's standard version: 100 steps against each of the 9
    runner-up classes, which the ``standard`` preset sets): ``steps`` per target against
    each of the ``target_classes`` classes with the highest logits after the true one, one
    restart (the first run starts at the clean image). FAB minimises
    the distance; an example farther than eps counts as a failure and comes back as the
    clean image. ``alpha_max``, ``eta`` (overshoot) and ``beta`` (backward step) are the
    paper's. Samples fooled by one target are not attacked with the next."""

    steps: int = 50
    target_classes: int = 3
    restarts: int = 1
    alpha_max: float = 0.1
    eta: float = 1.05
    beta: float = 0.9

    name: ClassVar[str] = "fab_t"
    norm: ClassVar[str] = "linf"
    access: ClassVar[str] = "gradients"
    minimal: ClassVar[bool] = False

    def craft(self, model_fn: ModelFn, x: torch.Tensor, y: torch.Tensor, eps: float | None):
        with torch.no_grad():
            n_classes = model_fn(x[:1]).shape[1]
        targets = runner_up_targets(self.target_classes, n_classes)
        attack = torchattacks_attack("FAB")(
            model_fn,
            norm=NORM_NAMES[self.norm],
            eps=eps,
            steps=self.steps,
            n_restarts=self.restarts,
            alpha_max=self.alpha_max,
            eta=self.eta,
            beta=self.beta,
            seed=next_seed(),
            multi_targeted=True,
            n_classes=n_classes,
        )
        attack.n_target_classes = targets  # the runner-up classes to try
        adv = call(attack, model_fn, x, y)
        # With an all-zero gradient (the naive threat model on a quantized model) the
        # boundary projection divides by zero; those samples were not moved by anything
        # the attack could see, so they come back clean.
        finite = torch.isfinite(adv.flatten(1)).all(1)
        return torch.where(finite.view(-1, *([1] * (x.ndim - 1))), adv, x)
