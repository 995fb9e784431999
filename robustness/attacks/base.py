"""What every attack module provides, and the vocabulary the runner and report share."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Literal, Protocol

import torch

Norm = Literal["linf", "l2"]
# What the attacker needs from the model: gradients, only its decisions/logits, nothing,
# or the model itself (its quantizer's thresholds and the CNN behind it: an exact attack).
Access = Literal["gradients", "queries", "none", "model"]
ModelFn = Callable[[torch.Tensor], torch.Tensor]

# Every attack works on images in [0, 1]; the runner clamps again after each attack.
CLIP_MIN = 0.0
CLIP_MAX = 1.0


class Attack(Protocol):
    """A frozen dataclass of parameters with a ``craft`` method.

    Bounded attacks (``minimal = False``) search inside the ``eps`` ball of ``norm``.
    Minimal-perturbation attacks (``minimal = True``) ignore ``eps`` and return the
    smallest adversarial example they find; the runner then judges them at every radius.
    An attack whose loss needs more than two classes says so in ``min_classes`` (APGD-T: 4);
    the plan skips it, with the reason, on a model with fewer.
    """

    name: ClassVar[str]
    norm: ClassVar[Norm]
    access: ClassVar[Access]
    minimal: ClassVar[bool]

    def craft(
        self, model_fn: ModelFn, x: torch.Tensor, y: torch.Tensor, eps: float | None
    ) -> torch.Tensor: ...


def with_restarts(
    model_fn: ModelFn,
    x: torch.Tensor,
    y: torch.Tensor,
    restarts: int,
    attack_once: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Run a randomised attack up to ``restarts`` times, retrying only the samples not yet
    misclassified by ``model_fn``; each sample keeps its first successful example."""
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    best = attack_once(x, y).detach()
    for _ in range(restarts - 1):
        with torch.no_grad():
            todo = model_fn(best).argmax(1) == y
        if not todo.any():
            break
        retry = attack_once(x[todo], y[todo]).detach()
        with torch.no_grad():
            fooled = model_fn(retry).argmax(1) != y[todo]
        index = todo.nonzero().squeeze(1)[fooled]
        best[index] = retry[fooled]
    return best
