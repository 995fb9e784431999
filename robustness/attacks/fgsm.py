"""FGSM: one signed-gradient step of size eps.

Goodfellow, Shlens and Szegedy, "Explaining and Harnessing Adversarial Examples"
(arXiv 1412.6572). Norm: L-inf. Inputs in [0, 1]. Adapter over cleverhans'
``fast_gradient_method``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from cleverhans.torch.attacks.fast_gradient_method import fast_gradient_method

from robustness.attacks.base import CLIP_MAX, CLIP_MIN, ModelFn


@dataclass(frozen=True)
class FGSM:
    name: ClassVar[str] = "fgsm"
    norm: ClassVar[str] = "linf"
    access: ClassVar[str] = "gradients"
    minimal: ClassVar[bool] = False

    def craft(self, model_fn: ModelFn, x: torch.Tensor, y: torch.Tensor, eps: float | None):
        return fast_gradient_method(
            model_fn, x, eps, np.inf, clip_min=CLIP_MIN, clip_max=CLIP_MAX, y=y
        )
