"""PGD (L2): normalised-gradient steps from a random start, projected onto the L2 ball.

Madry, Makelov, Schmidt, Tsipras and Vladu, "Towards Deep Learning Models Resistant to
Adversarial Attacks" (arXiv 1706.06083). Norm: L2 (radius over the whole image).
Inputs in [0, 1]. Adapter over cleverhans' ``projected_gradient_descent`` with ``norm=2``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from cleverhans.torch.attacks.projected_gradient_descent import projected_gradient_descent

from robustness.attacks.base import CLIP_MAX, CLIP_MIN, ModelFn, with_restarts


@dataclass(frozen=True)
class PGDL2:
    """Step = ``step_ratio`` * eps, as for L-inf PGD. cleverhans draws the random start
    uniformly in the L-inf cube of side eps and rescales it onto the L2 ball."""

    nb_iter: int = 40
    step_ratio: float = 2.5 / 40
    restarts: int = 1

    name: ClassVar[str] = "pgd_l2"
    norm: ClassVar[str] = "l2"
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
                2,
                clip_min=CLIP_MIN,
                clip_max=CLIP_MAX,
                y=y_,
                rand_init=True,
            )

        return with_restarts(model_fn, x, y, self.restarts, once)
