"""Input quantizers from QuSecNets (Khalid et al., arXiv 1811.01437).

Both quantizers map a pixel intensity x in [0, 1] onto L output levels
{0, 1/(L-1), ..., 1} through L-1 sorted thresholds t_1 < ... < t_{L-1}:

    hard(x) = sum_i 1[x > t_i] / (L-1)                    (the exact staircase)
    soft(x) = sum_i sigmoid(h * (x - t_i)) / (L-1)        (its smooth surrogate)

Constant Quantization (CQ) fixes the thresholds; Trainable Quantization (TQ)
learns them jointly with the CNN on the classification loss, through the soft
staircase, and serves the hard staircase.

What the paper leaves open, and what we chose. (We worked from the paper's abstract
and the brief; where the text below says "the paper does not fix", we found no value
we could cite, and the choice is ours.)

* Steepness h. TQ trains through a sum of sigmoids; the paper does not fix h per
  dataset. We make h a configuration value, stored in every checkpoint, and let
  training anneal it upward (see ``training.config``) so that the soft staircase
  the CNN sees at the end of training is close to the hard one that is served.
* Number of levels L per dataset. The paper does not fix one L per dataset that
  we could cite. L is a parameter here; the shipped MNIST models use L=2.
* Whether the output levels are learned. The abstract says the "quantization
  levels are iteratively learned"; we read that as the thresholds, keep the
  output levels fixed and uniform, {0, 1/(L-1), ..., 1}, and learn only the
  thresholds.
* Keeping thresholds sorted and inside (0, 1). TQ does not store thresholds
  directly: it stores L unconstrained logits; the L gaps between 0, the
  thresholds and 1 are ``MIN_GAP + (1 - L * MIN_GAP) * softmax(logits)``, and the
  thresholds are the running sums of the first L-1 gaps. Any value of the
  logits therefore yields thresholds at least ``MIN_GAP`` apart and at least
  ``MIN_GAP`` from 0 and 1, with no clamping or projection step to forget. The
  floor keeps that true in float32 even when a softmax entry underflows; at
  1e-3 it is below one step of an 8-bit image (1/255), so it costs nothing.
* Uniform default thresholds. With L levels we put the thresholds at the
  midpoints between adjacent levels, (2k-1) / (2(L-1)), which rounds each pixel
  to its nearest level (0.5 for L=2).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import nn

QuantizerMode = Literal["hard", "soft"]
QUANTIZER_KINDS = ("none", "cq", "tq")
MIN_GAP = 1e-3


def uniform_thresholds(levels: int) -> torch.Tensor:
    """Midpoints between adjacent output levels: rounding to the nearest level."""
    _check_levels(levels)
    k = torch.arange(1, levels, dtype=torch.float64)
    return ((2 * k - 1) / (2 * (levels - 1))).float()


def hard_staircase(x: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """The exact staircase; its gradient is zero almost everywhere."""
    steps = (x.unsqueeze(-1) > thresholds).to(x.dtype)
    return steps.sum(-1) / thresholds.numel()


class StaircaseTable:
    """``hard_staircase`` on NumPy arrays, bit for bit: for the service's per-request path.

    Each output is looked up in a table that ``hard_staircase``'s own division built, and
    the count of thresholds below a pixel is the same float32 comparison, so the result is
    identical; it skips the handful of torch dispatches that dominate on one small image.
    """

    def __init__(self, thresholds: torch.Tensor) -> None:
        self.thresholds = thresholds.detach().cpu().float().numpy().copy()
        counts = torch.arange(thresholds.numel() + 1, dtype=torch.float32)
        self.values = (counts / thresholds.numel()).numpy()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        counts = (x[..., None] > self.thresholds).sum(-1)
        return self.values[counts]


def soft_steps(x: torch.Tensor, thresholds: torch.Tensor, steepness: float) -> torch.Tensor:
    """One sigmoid step per threshold, sigmoid(h * (x - t_i)): shape (L-1, *x.shape)."""
    return torch.sigmoid(steepness * (x.unsqueeze(0) - thresholds.view(-1, *[1] * x.dim())))


def soft_staircase(x: torch.Tensor, thresholds: torch.Tensor, steepness: float) -> torch.Tensor:
    """The sum-of-sigmoids surrogate; tends to the hard staircase as steepness grows."""
    return soft_steps(x, thresholds, steepness).mean(0)


class _StraightThroughStaircase(torch.autograd.Function):
    """Exact hard staircase forward; identity or soft-staircase derivative backward."""

    @staticmethod
    def forward(ctx, x, thresholds, steepness, backward):  # noqa: ANN001, ANN205
        ctx.save_for_backward(x, thresholds)
        ctx.steepness, ctx.backward_mode = steepness, backward
        return hard_staircase(x, thresholds)

    @staticmethod
    def backward(ctx, grad_output):  # noqa: ANN001, ANN205
        x, thresholds = ctx.saved_tensors
        if ctx.backward_mode == "identity":
            return grad_output, None, None, None
        with torch.enable_grad():
            x_ = x.detach().requires_grad_(True)
            (slope,) = torch.autograd.grad(soft_staircase(x_, thresholds, ctx.steepness).sum(), x_)
        return grad_output * slope, None, None, None


BPDA_BACKWARDS = ("identity", "soft")


def straight_through(
    x: torch.Tensor, quantizer: InputQuantizer, backward: str = "identity"
) -> torch.Tensor:
    """BPDA (Athalye, Carlini and Wagner, arXiv 1802.00420): the served hard staircase
    forward, and a differentiable stand-in backward (straight-through identity, or the
    soft staircase's derivative). Used by the adaptive attacks and by adversarial training."""
    if backward not in BPDA_BACKWARDS:
        raise ValueError(f"unknown BPDA backward {backward!r}; valid: 'identity', 'soft'")
    return _StraightThroughStaircase.apply(
        x, quantizer.thresholds.detach(), quantizer.steepness, backward
    )


class InputQuantizer(nn.Module):
    """Base of the quantizer family: a staircase in front of the CNN.

    ``forward`` uses the hard staircase unless ``mode`` says otherwise; a
    quantizer with trainable thresholds (``learns_thresholds``) uses the soft one
    while in training mode, since the hard one passes no gradient to them.
    """

    kind: str = "none"
    learns_thresholds: bool = False

    def __init__(self, levels: int, steepness: float) -> None:
        super().__init__()
        _check_levels(levels)
        if steepness <= 0:
            raise ValueError(f"steepness must be positive, got {steepness}")
        self.levels = levels
        self.steepness = float(steepness)

    @property
    def thresholds(self) -> torch.Tensor:
        raise NotImplementedError

    def resolve_mode(self, mode: QuantizerMode | None) -> QuantizerMode:
        return mode or ("soft" if self.training and self.learns_thresholds else "hard")

    def forward(self, x: torch.Tensor, mode: QuantizerMode | None = None) -> torch.Tensor:
        mode = self.resolve_mode(mode)
        if mode == "hard":
            return hard_staircase(x, self.thresholds.detach())
        if mode == "soft":
            return soft_staircase(x, self.thresholds, self.steepness)
        raise ValueError(f"unknown quantizer mode {mode!r}; valid: 'hard', 'soft'")

    def spec(self) -> dict:
        """The quantizer as it is recorded in a checkpoint manifest."""
        return {
            "kind": self.kind,
            "levels": self.levels,
            "thresholds": [round(float(t), 8) for t in self.thresholds.detach().cpu()],
            "steepness": self.steepness,
        }

    def extra_repr(self) -> str:
        return f"levels={self.levels}, steepness={self.steepness}"


class ConstantQuantizer(InputQuantizer):
    """CQ: fixed thresholds (uniform unless given); the CNN trains on the hard staircase.

    ``steepness`` only matters when an evaluation asks for the soft staircase.
    """

    kind = "cq"

    def __init__(
        self, levels: int, thresholds: torch.Tensor | None = None, steepness: float = 50.0
    ) -> None:
        super().__init__(levels, steepness)
        fixed = uniform_thresholds(levels) if thresholds is None else torch.as_tensor(thresholds)
        _check_thresholds(fixed.float(), levels)
        self.register_buffer("fixed_thresholds", fixed.float().clone())

    @property
    def thresholds(self) -> torch.Tensor:
        return self.fixed_thresholds


class TrainableQuantizer(InputQuantizer):
    """TQ: thresholds learned with the CNN, kept sorted in (0, 1) by construction.

    The stored parameter is ``gap_logits`` (L values); the thresholds are the
    running sums of the first L-1 gaps derived from it (see the module docstring).
    """

    kind = "tq"
    learns_thresholds = True

    def __init__(
        self, levels: int, thresholds: torch.Tensor | None = None, steepness: float = 10.0
    ) -> None:
        super().__init__(levels, steepness)
        start = uniform_thresholds(levels) if thresholds is None else torch.as_tensor(thresholds)
        _check_thresholds(start.float(), levels)
        gaps = torch.diff(torch.cat([torch.zeros(1), start.double(), torch.ones(1)]))
        if (gaps <= MIN_GAP).any():
            raise ValueError(
                f"trainable thresholds must be more than {MIN_GAP} apart and from 0 and 1, "
                f"got {start.tolist()}"
            )
        shares = (gaps - MIN_GAP) / (1 - levels * MIN_GAP)
        self.gap_logits = nn.Parameter(torch.log(shares).float())

    @property
    def thresholds(self) -> torch.Tensor:
        gaps = MIN_GAP + (1 - self.levels * MIN_GAP) * torch.softmax(self.gap_logits, dim=0)
        return torch.cumsum(gaps, dim=0)[:-1]


def build_quantizer(
    kind: str,
    levels: int = 2,
    thresholds: list[float] | None = None,
    steepness: float | None = None,
) -> InputQuantizer | None:
    """Build a quantizer by kind; ``none`` gives no quantizer (the undefended CNN)."""
    if kind == "none":
        return None
    start = None if thresholds is None else torch.tensor(thresholds, dtype=torch.float32)
    if kind == "cq":
        return ConstantQuantizer(levels, start, steepness or 50.0)
    if kind == "tq":
        return TrainableQuantizer(levels, start, steepness or 10.0)
    raise ValueError(f"unknown quantizer kind {kind!r}; valid kinds: {', '.join(QUANTIZER_KINDS)}")


def _check_levels(levels: int) -> None:
    if not isinstance(levels, int) or levels < 2:
        raise ValueError(f"levels must be an integer >= 2, got {levels!r}")


def _check_thresholds(thresholds: torch.Tensor, levels: int) -> None:
    if thresholds.shape != (levels - 1,):
        raise ValueError(
            f"{levels} levels need {levels - 1} thresholds, got shape {tuple(thresholds.shape)}"
        )
    if not torch.isfinite(thresholds).all():
        raise ValueError("thresholds must be finite")
    if (thresholds <= 0).any() or (thresholds >= 1).any():
        raise ValueError(f"thresholds must lie strictly inside (0, 1), got {thresholds.tolist()}")
    if (torch.diff(thresholds) <= 0).any():
        raise ValueError(f"thresholds must be strictly increasing, got {thresholds.tolist()}")
