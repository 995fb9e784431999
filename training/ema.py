"""An exponential moving average of the model's weights, the copy a run ships when asked.

Averaging the weights along the optimizer's path (Polyak averaging; as an exponential average
it is what Gowal et al. 2020 and Rebuffi et al. 2021 use for their adversarially trained
CIFAR-10 models) smooths the noise of the last steps, which adversarial training has a lot
of. Every parameter, the TQ quantizer's threshold logits included, is averaged; buffers
(batch-norm statistics) are copied from the live model, as they are not trained by the
gradient. Early on the decay is lowered to ``(1 + t) / (10 + t)`` after ``t`` updates, so the
average is not dominated by the random initial weights.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"the average's decay must lie strictly between 0 and 1, not {decay}")
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        weight = 1.0 - self.current_decay()
        for mine, live in zip(self.model.parameters(), model.parameters(), strict=True):
            mine.lerp_(live.detach(), weight)
        for mine, live in zip(self.model.buffers(), model.buffers(), strict=True):
            mine.copy_(live)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor], updates: int) -> None:
        self.model.load_state_dict(state, strict=True)
        self.updates = updates
