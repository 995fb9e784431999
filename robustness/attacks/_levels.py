"""Level space: what an L-inf attacker can make a staircase quantizer output, and back.

A staircase with sorted thresholds t_1 < ... < t_{L-1} maps a pixel v to the level
k = #{i : v > t_i}, i.e. level k holds the inputs (t_k, t_{k+1}] (t_0 = -inf, t_L = +inf),
and the CNN sees k / (L-1). Under an L-inf budget eps a pixel x reaches exactly the levels
of [max(0, x - eps), min(1, x + eps)]; the staircase is monotone, so they form a range
[low, high] of level indices: the attacker's feasible set is a box in level space.

On the 8-bit grid (``grid=True``) the endpoints are whole intensity steps: x +/- s/255 with
s = floor(255 * eps), and a level counts only through the grid values it holds.

``realize`` maps levels back to a real input: per pixel, the point of the level's interval
inside the budget nearest to x, kept ``EDGE`` inside the budget and away from a threshold
so float rounding in a later projection cannot push it across either; ``verified`` keeps
only what the deployed model, fed that input exactly, gets wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from models.cnn import QuantizedClassifier

# Distance kept from a threshold in continuous realizations: about 8 float32 steps at 0.5.
EDGE = 1e-6
GRID_STEPS = 255


@dataclass(frozen=True)
class LevelBox:
    """Per-pixel level ranges for one batch: ``low`` <= level <= ``high`` (long tensors)."""

    x: torch.Tensor
    eps: float
    thresholds: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor
    grid: bool

    @property
    def scale(self) -> int:
        return self.thresholds.numel()  # L - 1: level k is fed to the CNN as k / scale

    def clean_levels(self) -> torch.Tensor:
        return levels_of(self.x, self.thresholds)

    def subset(self, index: torch.Tensor) -> LevelBox:
        return LevelBox(
            self.x[index], self.eps, self.thresholds, self.low[index], self.high[index], self.grid
        )


def levels_of(x: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """The level index of every pixel (what ``hard_staircase`` computes, times L-1)."""
    return (x.unsqueeze(-1) > thresholds).sum(-1)


def grid_steps(eps: float) -> int:
    """Whole 8-bit intensity steps inside an eps budget (the tolerance absorbs 0.2 * 255
    landing a hair under 51 in floating point)."""
    return math.floor(GRID_STEPS * eps + 1e-6)


def on_grid(x: torch.Tensor) -> torch.Tensor:
    """Pixels that are exactly k / 255 for an integer k, as an 8-bit image loads."""
    index = torch.round(x * GRID_STEPS)
    return (index / GRID_STEPS).to(x.dtype) == x


def _inner(eps: float) -> float:
    """The continuous budget less ``EDGE``, so float rounding cannot carry a realized
    pixel past eps (pixels within 1e-6 of their reach lose that sliver)."""
    return eps - EDGE if eps > 2 * EDGE else eps


def level_box(x: torch.Tensor, eps: float, thresholds: torch.Tensor, grid: bool) -> LevelBox:
    thresholds = thresholds.detach().to(x.dtype)
    if grid:
        steps = grid_steps(eps)
        index = torch.round(x * GRID_STEPS)
        low_value = (index - steps).clamp(0, GRID_STEPS) / GRID_STEPS
        high_value = (index + steps).clamp(0, GRID_STEPS) / GRID_STEPS
        # A pixel off the grid keeps its level: the grid says nothing about its reach.
        fixed = ~on_grid(x)
        low_value = torch.where(fixed, x, low_value.to(x.dtype))
        high_value = torch.where(fixed, x, high_value.to(x.dtype))
    else:
        reach = _inner(eps)
        low_value, high_value = (x - reach).clamp(0, 1), (x + reach).clamp(0, 1)
    low, high = levels_of(low_value, thresholds), levels_of(high_value, thresholds)
    return LevelBox(x, eps, thresholds, low, high, grid)


def realize(box: LevelBox, levels: torch.Tensor) -> torch.Tensor:
    """The input nearest to ``box.x`` whose hard quantization is ``levels``, within the
    budget. Where no such input exists (a level outside the box, or one with no grid
    value) the pixel keeps its clean value, and ``verified`` rejects the image."""
    x, t = box.x, box.thresholds
    if box.grid:
        return _realize_on_grid(box, levels)
    inf = torch.tensor([float("inf")], dtype=x.dtype)
    below = torch.cat([-inf, t])[levels]  # t_k: the level holds (t_k, t_{k+1}]
    above = torch.cat([t, inf])[levels]
    reach = _inner(box.eps)
    floor, ceiling = (x - reach).clamp(0, 1), (x + reach).clamp(0, 1)
    low = torch.maximum(floor, below + EDGE)
    high = torch.minimum(ceiling, above - EDGE)
    # Too narrow for the margin: the tightest values that still quantize right.
    narrow = low > high
    low = torch.where(narrow, torch.maximum(floor, torch.nextafter(below, inf)), low)
    high = torch.where(narrow, torch.minimum(ceiling, above), high)
    value = torch.minimum(torch.maximum(x, low), high)
    return torch.where(low <= high, value, x)


def _realize_on_grid(box: LevelBox, levels: torch.Tensor) -> torch.Tensor:
    x = box.x
    values = torch.arange(GRID_STEPS + 1, dtype=x.dtype) / GRID_STEPS
    grid_levels = levels_of(values, box.thresholds)  # (256,) nondecreasing
    n_levels = box.scale + 1
    big = GRID_STEPS + 1
    first = torch.full((n_levels,), big).scatter_reduce(
        0, grid_levels, torch.arange(big), "amin", include_self=True
    )
    last = torch.full((n_levels,), -1).scatter_reduce(
        0, grid_levels, torch.arange(big), "amax", include_self=True
    )
    steps = grid_steps(box.eps)
    index = torch.round(x * GRID_STEPS).long()
    low = torch.maximum((index - steps).clamp(min=0), first[levels])
    high = torch.minimum((index + steps).clamp(max=GRID_STEPS), last[levels])
    chosen = torch.minimum(torch.maximum(index, low), high)
    ok = (low <= high) & on_grid(x)
    return torch.where(ok, values[chosen.clamp(0, GRID_STEPS)], x)


def verified(
    model: QuantizedClassifier,
    box: LevelBox,
    candidate: torch.Tensor,
    levels: torch.Tensor,
    y: torch.Tensor,
) -> torch.Tensor:
    """(N,) true where ``candidate`` lies within the budget (on the grid: whole steps, up
    to floor(255 * eps) of them), quantizes to ``levels`` and is misclassified by
    ``model`` exactly as served (hard staircase, the image as given)."""
    if box.grid:  # whole steps: k/255 - j/255 can land a float32 hair above eps
        moved = torch.round(candidate * GRID_STEPS) - torch.round(box.x * GRID_STEPS)
        within = ((moved.abs() <= grid_steps(box.eps)) & on_grid(candidate)) | (candidate == box.x)
    else:
        within = (candidate - box.x).abs() <= box.eps
    within = within.flatten(1).all(1)
    in_range = ((candidate >= 0) & (candidate <= 1)).flatten(1).all(1)
    same = levels_of(candidate, box.thresholds) == levels
    with torch.no_grad():
        wrong = model(candidate).argmax(1) != y
    return within & in_range & same.flatten(1).all(1) & wrong
