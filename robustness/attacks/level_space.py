"""Level space: an exact white-box attack on a staircase input quantizer.

Our attack for QuSecNets-style defenses (after the adaptive-attack advice of Athalye,
Carlini and Wagner, arXiv 1802.00420, and Tramer et al., arXiv 2002.08347: attack what the
defense computes). Behind the staircase the CNN is differentiable, and under an L-inf
budget each pixel can only reach a range of levels (``_levels.py``), so the attack works on
the levels themselves:

1. PGD with a margin loss over the relaxed box (each pixel's level a real number between
   its lowest and highest reachable level), from the clean levels first and from uniform
   random points of the box on the restarts; the levels are rounded and checked at every
   step.
2. On the images that survive, a greedy discrete search from the best rounded levels: one
   pixel moves one level per step, choosing among the ``candidates`` moves the gradient
   ranks best by their exact margin; it stops when the image is fooled or no move helps.
3. Every success is mapped back to a real input within the budget that quantizes to the
   found levels, and kept only if the deployed model, fed that input, is fooled. Images
   without a verified success come back unchanged.

Norm: L-inf. Inputs in [0, 1]. Needs the model itself (its thresholds and CNN), not a
gradient through it. ``level`` searches the continuous budget; ``level_8bit``
(``level_space_8bit.py``) only whole 8-bit intensity steps, what the service receives.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import torch

from models.cnn import QuantizedClassifier
from robustness.attacks._levels import LevelBox, level_box, realize, verified

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LevelSpace:
    """``steps`` sign-gradient steps of ``step`` levels per PGD run, ``restarts`` runs;
    then up to ``greedy_steps`` single-pixel moves, each chosen among ``candidates``."""

    steps: int = 50
    step: float = 0.1
    restarts: int = 3
    greedy_steps: int = 40
    candidates: int = 16

    name: ClassVar[str] = "level"
    norm: ClassVar[str] = "linf"
    access: ClassVar[str] = "model"
    minimal: ClassVar[bool] = False
    grid: ClassVar[bool] = False

    @property
    def evaluations_per_sample(self) -> int:
        """Model evaluations one image costs at most: the PGD runs, then the greedy moves."""
        return self.steps * self.restarts + self.greedy_steps * self.candidates

    def craft(
        self, model_fn: QuantizedClassifier, x: torch.Tensor, y: torch.Tensor, eps: float | None
    ) -> torch.Tensor:
        quantizer = getattr(model_fn, "quantizer", None)
        if quantizer is None:
            raise ValueError(f"{self.name} needs a model with a staircase quantizer")
        box = level_box(x, eps, quantizer.thresholds, self.grid)
        levels, margin = self.search(model_fn.cnn, box, y)
        adv = realize(box, levels)
        ok = verified(model_fn, box, adv, levels, y)
        found = int((margin < 0).sum())
        if int(ok.sum()) != found:
            logger.warning(
                "%s: %d of %d level-space successes did not verify on the served model",
                self.name,
                found - int(ok.sum()),
                found,
            )
        return torch.where(ok.view(-1, *[1] * (x.ndim - 1)), adv, x)

    def search(
        self, cnn: torch.nn.Module, box: LevelBox, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The best levels found per image and their margin (negative: fooled)."""
        levels = box.clean_levels()
        margin = _margin(cnn, levels, box.scale, y)
        for restart in range(self.restarts):
            todo = (margin >= 0).nonzero().squeeze(1)
            if len(todo) == 0:
                break
            part = box.subset(todo)
            start = part.clean_levels().float() if restart == 0 else _uniform(part)
            found, found_margin = self._pgd(cnn, part, y[todo], start)
            better = found_margin < margin[todo]
            levels[todo[better]] = found[better]
            margin[todo[better]] = found_margin[better]
        todo = (margin >= 0).nonzero().squeeze(1)
        if len(todo) and self.greedy_steps:
            found, found_margin = self._greedy(cnn, box.subset(todo), y[todo], levels[todo])
            levels[todo], margin[todo] = found, found_margin
        return levels, margin

    def _pgd(self, cnn, box: LevelBox, y: torch.Tensor, start: torch.Tensor):
        low, high = box.low.to(start.dtype), box.high.to(start.dtype)
        z = start.clamp(low, high)
        best = z.round().long()
        best_margin = _margin(cnn, best, box.scale, y)
        for _ in range(self.steps):
            z = z.detach().requires_grad_(True)
            with torch.enable_grad():
                margin = _margin(cnn, z, box.scale, y)
                (grad,) = torch.autograd.grad(margin.sum(), z)
            z = (z.detach() - self.step * grad.sign()).clamp(low, high)
            rounded = z.round().long()
            rounded_margin = _margin(cnn, rounded, box.scale, y)
            better = rounded_margin < best_margin
            best[better], best_margin[better] = rounded[better], rounded_margin[better]
            if bool((best_margin < 0).all()):
                break
        return best, best_margin

    def _greedy(self, cnn, box: LevelBox, y: torch.Tensor, levels: torch.Tensor):
        levels = levels.clone()
        margin = _margin(cnn, levels, box.scale, y)
        active = margin >= 0
        for _ in range(self.greedy_steps):
            index = active.nonzero().squeeze(1)
            if len(index) == 0:
                break
            moved, moved_margin = _best_single_moves(
                cnn, box.subset(index), y[index], levels[index], self.candidates
            )
            improved = moved_margin < margin[index]
            levels[index[improved]] = moved[improved]
            margin[index[improved]] = moved_margin[improved]
            active[index[~improved]] = False  # no single move helps: a local optimum
            active &= margin >= 0
        return levels, margin


def _margin(cnn, levels: torch.Tensor, scale: int, y: torch.Tensor) -> torch.Tensor:
    """Logit of the true class minus the best other logit: negative means fooled."""
    with torch.set_grad_enabled(levels.requires_grad):
        logits = cnn(levels.float() / scale)
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return true - other


def _uniform(box: LevelBox) -> torch.Tensor:
    low = box.low.float()
    return low + torch.rand(low.shape) * (box.high.float() - low)


def _best_single_moves(cnn, box: LevelBox, y: torch.Tensor, levels: torch.Tensor, k: int):
    """For each image, the exact best of the ``k`` one-pixel, one-level moves the margin's
    gradient ranks highest; returns the moved levels and their margins."""
    n = len(levels)
    z = levels.float().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(_margin(cnn, z, box.scale, y).sum(), z)
    flat_grad = grad.flatten(1)  # (n, P)
    flat_levels = levels.flatten(1)
    up = torch.where(flat_levels < box.high.flatten(1), -flat_grad, float("-inf"))
    down = torch.where(flat_levels > box.low.flatten(1), flat_grad, float("-inf"))
    scores = torch.cat([up, down], 1)  # (n, 2P): moving up lowers the margin by -grad
    k = min(k, scores.shape[1])
    top_scores, top = scores.topk(k, dim=1)  # (n, k)
    pixels = flat_levels.shape[1]
    pixel, direction = top % pixels, torch.where(top < pixels, 1, -1)
    candidates = flat_levels.unsqueeze(1).repeat(1, k, 1)  # (n, k, P)
    rows = torch.arange(n)[:, None].expand(n, k)
    columns = torch.arange(k)[None, :].expand(n, k)
    candidates[rows, columns, pixel] += direction
    shaped = candidates.view(n * k, *levels.shape[1:])
    with torch.no_grad():
        margins = _margin(cnn, shaped, box.scale, y.repeat_interleave(k)).view(n, k)
    margins = torch.where(torch.isinf(top_scores), float("inf"), margins)
    best = margins.argmin(1)
    chosen = candidates[torch.arange(n), best].view_as(levels)
    return chosen, margins[torch.arange(n), best]
