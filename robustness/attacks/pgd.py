"""PGD (L-inf): BIM from a uniform random start in the ball, with optional restarts.

Madry, Makelov, Schmidt, Tsipras and Vladu, "Towards Deep Learning Models Resistant to
Adversarial Attacks" (arXiv 1706.06083). Norm: L-inf. Inputs in [0, 1]. Adapter over
cleverhans' ``projected_gradient_descent`` with ``rand_init=True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from cleverhans.torch.attacks.projected_gradient_descent import projected_gradient_descent

from robustness.attacks.base import CLIP_MAX, CLIP_MIN, ModelFn, with_restarts


@dataclass(frozen=True)
class PGD:
    """Step = ``step_ratio`` * eps; 2.5 * eps / nb_iter is Madry et al.'s rule, so the
    walk can cross the ball from one side to the other and back."""

    nb_iter: int = 40
    step_ratio: float = 2.5 / 40
    restarts: int = 1

    name: ClassVar[str] = "pgd"
    norm: ClassVar[str] = "linf"
    order: ClassVar[float] = np.inf  # cleverhans' ``norm`` argument
    access: ClassVar[str] = "gradients"
    minimal: ClassVar[bool] = False

    def craft(self, model_fn: ModelFn, x: torch.Tensor, y: torch.Tensor, eps: float | None):
        def once(x_: torch.Tensor, y_: torch.Tensor) -> torch.Tensor:
            return projected_gradient_descent(
                model_fn,
                x_,
                eps,
                min(eps, self.step_ratio * eps),
                self.nb_iter,
                self.order,
                clip_min=CLIP_MIN,
                clip_max=CLIP_MAX,
                y=y_,
                rand_init=True,
            )

        return with_restarts(model_fn, x, y, self.restarts, once)
