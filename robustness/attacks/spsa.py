"""SPSA: Adam on a finite-difference gradient estimate from random +/- delta probes.

Uesato, O'Donoghue, van den Oord and Kohli, "Adversarial Risk and the Dangers of
Evaluating Against Weak Attacks" (arXiv 1802.05666). Gradient-free: it only reads logits.
Norm: L-inf. Inputs in [0, 1]. Adapter over cleverhans' ``spsa`` (one sample at a time).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from cleverhans.torch.attacks.spsa import spsa

from robustness.attacks.base import CLIP_MAX, CLIP_MIN, ModelFn


@dataclass(frozen=True)
class SPSA:
    """A CPU budget: each of ``nb_iter`` steps costs 2 * ``spsa_samples`` forward passes
    per image (the paper used 100 steps of 8,192). Adam moves each pixel by about its
    learning rate per step, so the rate is ``lr_ratio`` * eps: 0.1 lets 40 steps cross the
    ball twice at any radius (cleverhans' fixed 0.01 cannot reach 0.3 in 40 steps, and
    overshoots 2/255). ``early_stop`` ends a sample's search once its margin loss is
    negative, i.e. once it is misclassified, which only saves time on samples fooled."""

    nb_iter: int = 40
    spsa_samples: int = 64
    spsa_iters: int = 1
    lr_ratio: float = 0.1
    delta: float = 0.01
    early_stop: bool = True

    name: ClassVar[str] = "spsa"
    norm: ClassVar[str] = "linf"
    access: ClassVar[str] = "queries"
    minimal: ClassVar[bool] = False

    def craft(self, model_fn: ModelFn, x: torch.Tensor, y: torch.Tensor, eps: float | None):
        return spsa(
            model_fn,
            x,
            eps,
            self.nb_iter,
            norm=np.inf,
            clip_min=CLIP_MIN,
            clip_max=CLIP_MAX,
            y=y,
            early_stop_loss_threshold=0.0 if self.early_stop else None,
            learning_rate=self.lr_ratio * eps,
            delta=self.delta,
            spsa_samples=self.spsa_samples,
            spsa_iters=self.spsa_iters,
        )
