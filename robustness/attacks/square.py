"""Square (L-inf): random search over square-shaped updates, gradient-free.

Andriushchenko, Croce, Flammarion and Hein, "Square Attack: a query-efficient black-box
adversarial attack via random search" (arXiv 1912.00049), AutoAttack's gradient-free
component. It only reads logits (margin loss). Norm: L-inf. Inputs in [0, 1]. Adapter
over torchattacks' ``Square``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from robustness.attacks._torchattacks import NORM_NAMES, call, next_seed, torchattacks_attack
from robustness.attacks.base import ModelFn


@dataclass(frozen=True)
class Square:
    """A CPU budget (AutoAttack: 5,000 queries): ``queries`` forward passes per image,
    fewer for images fooled early. ``p_init`` is the first square's share of the image,
    shrunk on AutoAttack's schedule, rescaled to the query budget unless
    ``rescale_schedule`` is false (AutoAttack's standard version keeps the schedule of
    10,000 queries with its 5,000)."""

    queries: int = 1000
    restarts: int = 1
    p_init: float = 0.8
    rescale_schedule: bool = True

    name: ClassVar[str] = "square"
    norm: ClassVar[str] = "linf"
    access: ClassVar[str] = "queries"
    minimal: ClassVar[bool] = False

    def craft(self, model_fn: ModelFn, x: torch.Tensor, y: torch.Tensor, eps: float | None):
        attack = torchattacks_attack("Square")(
            model_fn,
            norm=NORM_NAMES[self.norm],
            eps=eps,
            n_queries=self.queries,
            n_restarts=self.restarts,
            p_init=self.p_init,
            loss="margin",
            resc_schedule=self.rescale_schedule,
            seed=next_seed(),
        )
        return call(attack, model_fn, x, y)
