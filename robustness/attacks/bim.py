"""BIM: iterated FGSM from the clean image, projected back into the eps ball.

Kurakin, Goodfellow and Bengio, "Adversarial examples in the physical world"
(arXiv 1607.02533). Norm: L-inf. Inputs in [0, 1]. Adapter over cleverhans'
``projected_gradient_descent`` with ``rand_init=False``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from cleverhans.torch.attacks.projected_gradient_descent import projected_gradient_descent

from robustness.attacks.base import CLIP_MAX, CLIP_MIN, ModelFn


@dataclass(frozen=True)
class BIM:
    """``step_ratio`` * eps is the step; 10 steps of eps/10 walk to the ball's edge, as in
    the paper's choice of roughly eps/alpha iterations."""

    nb_iter: int = 10
    step_ratio: float = 0.1

    name: ClassVar[str] = "bim"
    norm: ClassVar[str] = "linf"
    access: ClassVar[str] = "gradients"
    minimal: ClassVar[bool] = False

    def craft(self, model_fn: ModelFn, x: torch.Tensor, y: torch.Tensor, eps: float | None):
        return projected_gradient_descent(
            model_fn,
            x,
            eps,
            min(eps, self.step_ratio * eps),
            self.nb_iter,
            np.inf,
            clip_min=CLIP_MIN,
            clip_max=CLIP_MAX,
            y=y,
            rand_init=False,
        )
