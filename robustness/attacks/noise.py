"""Uniform noise in the L-inf ball: the floor every real attack must beat.

Not an attack from a paper but the random-search baseline Athalye, Carlini and Wagner
(arXiv 1802.00420) recommend as a gradient-masking check. Norm: L-inf. Inputs in [0, 1].
Adapter over cleverhans' ``noise``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from cleverhans.torch.attacks.noise import noise

from robustness.attacks.base import CLIP_MAX, CLIP_MIN, ModelFn


@dataclass(frozen=True)
class UniformNoise:
    name: ClassVar[str] = "noise"
    norm: ClassVar[str] = "linf"
    access: ClassVar[str] = "none"
    minimal: ClassVar[bool] = False

    def craft(self, model_fn: ModelFn, x: torch.Tensor, y: torch.Tensor, eps: float | None):
        return noise(x, eps=eps, order=np.inf, clip_min=CLIP_MIN, clip_max=CLIP_MAX)
