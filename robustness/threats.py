"""Threat models: which model the attacker crafts on, and what gradients it gets.

* ``transfer``: the paper's setting. Examples are crafted on an undefended surrogate CNN of
  the same dataset and then shown to the defended model.
* ``naive``: white-box through the deployed model exactly as served. The hard staircase is
  a comparison, so autograd has no path through it; we hand the attack the staircase's true
  derivative (zero) instead of ``None`` so cleverhans runs to completion, and the gradient
  probe reports the masking.
* ``bpda``: Backward Pass Differentiable Approximation (Athalye, Carlini and Wagner,
  arXiv 1802.00420): hard staircase forward, straight-through identity (or the soft
  staircase's derivative) backward.
* ``gradient_free``: query-only attacks (SPSA, Square, HopSkipJump) and the noise floor on
  the deployed model.

Attacks that need the model itself (the level-space attack) are exact white-box attacks:
they get the deployed model, not a surface, and run once, under ``bpda`` (the adaptive
white-box row); a model without a quantizer has no level space.

Every threat model is judged the same way: the deployed model, hard staircase, classifies
the crafted images.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from models.cnn import QuantizedClassifier
from models.quantizers import straight_through
from robustness.attacks.base import Attack

THREAT_MODELS = ("transfer", "naive", "bpda", "gradient_free")
WHITE_BOX = ("naive", "bpda")
BpdaBackward = Literal["identity", "soft"]


def frozen_copy(model: QuantizedClassifier) -> QuantizedClassifier:
    """A private eval-mode copy whose weights need no gradient.

    Attacks call ``backward`` many times; on a copy they cannot touch the caller's
    (possibly served) model, and frozen weights skip computing weight gradients.
    """
    clone = copy.deepcopy(model).eval()
    clone.requires_grad_(False)
    return clone


def applies(threat_model: str, attack: Attack) -> bool:
    """Gradient attacks run under transfer and the white-box models, model-access attacks
    under BPDA; the rest query only."""
    if threat_model not in THREAT_MODELS:
        raise ValueError(
            f"unknown threat model {threat_model!r}; valid: {', '.join(THREAT_MODELS)}"
        )
    if attack.access == "model":
        return threat_model == "bpda"
    if attack.access == "gradients":
        return threat_model != "gradient_free"
    return threat_model == "gradient_free"


class ZeroGradientBridge(nn.Module):
    """The served model, plus a zero-valued term that ties every input to its logits.

    Values are unchanged; where autograd has no path (the hard staircase) the input's
    gradient becomes exactly zero rather than ``None``, which is the staircase's derivative.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.train(model.training)  # a wrapper's mode is its model's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        return logits + 0.0 * x.flatten(1).sum(1, keepdim=True)


class BPDAClassifier(nn.Module):
    """The deployed classifier with a differentiable stand-in for the staircase's backward."""

    def __init__(self, model: QuantizedClassifier, backward: BpdaBackward = "identity") -> None:
        super().__init__()
        if model.quantizer is None:
            raise ValueError("BPDA needs a quantizer; an undefended model is already white-box")
        if backward not in ("identity", "soft"):
            raise ValueError(f"unknown BPDA backward {backward!r}; valid: 'identity', 'soft'")
        self.model = model
        self.backward_mode = backward
        self.train(model.training)  # a wrapper's mode is its model's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.cnn(straight_through(x, self.model.quantizer, self.backward_mode))


@dataclass(frozen=True)
class GradientProbe:
    """What a gradient attacker gets at the clean inputs: the first thing to look at."""

    status: Literal["ok", "zero", "none"]  # none: autograd has no path to the input
    zero_fraction: float  # samples whose input gradient is exactly zero everywhere
    mean_abs: float

    def as_dict(self) -> dict:
        return {
            "status": self.status,
            "zero_fraction": self.zero_fraction,
            "mean_abs": self.mean_abs,
        }


def probe_gradients(model_fn: nn.Module, x: torch.Tensor, y: torch.Tensor) -> GradientProbe:
    """Cross-entropy gradient with respect to the input, as cleverhans would compute it."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model_fn(x), y)
        if not loss.requires_grad:
            return GradientProbe("none", 1.0, 0.0)
        (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
    if grad is None:
        return GradientProbe("none", 1.0, 0.0)
    zero = (grad.flatten(1) == 0).all(1)
    status = "zero" if bool(zero.all()) else "ok"
    return GradientProbe(status, float(zero.float().mean()), float(grad.abs().mean()))
