"""Judging crafted images on the deployed model: one result row per radius.

A row's robust accuracy counts a sample as robust only if the deployed model (hard
staircase) classifies both the clean image and its crafted counterpart correctly.
Minimal-perturbation attacks (CW-L2, HopSkipJump) run once; their examples are projected
onto each requested ball and judged there, plus one unbounded row with the raw examples.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from robustness.attacks import Attack

if TYPE_CHECKING:
    from robustness.plan import Unit
    from robustness.request import SuiteRequest


def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def project(adv: torch.Tensor, x: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """The nearest point to ``adv`` in the ``norm`` ball of radius ``eps`` around ``x``
    (exact for L-inf; radial for L2), kept in [0, 1]."""
    delta = adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        length = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        scale = (eps / length).clamp(max=1.0)
        delta = delta * scale.view(-1, *([1] * (x.ndim - 1)))
    return (x + delta).clamp(0.0, 1.0)


def judge_unit(
    unit: Unit,
    attack: Attack,
    target: torch.nn.Module,
    x: torch.Tensor,
    adv: torch.Tensor,
    y: torch.Tensor,
    clean_correct: torch.Tensor,
    request: SuiteRequest,
    seconds: float,
    complete: bool,
) -> list[dict]:
    """Rows for one unit: its own radius, or every radius for a minimal attack."""

    def row(norm: str, eps: float | None, images: torch.Tensor) -> dict:
        correct = predict(target, images, request.batch_size) == y
        return {
            "attack": unit.attack,
            "threat_model": unit.threat_model,
            "norm": norm,
            "epsilon": eps,
            "sanity": unit.sanity,
            "minimal": attack.minimal,
            "samples": len(y),
            "complete": complete,
            "clean_accuracy": _mean(clean_correct),
            **outcome_stats(x, images, clean_correct, correct),
            # Which samples stayed robust, so an attack set's accuracy can be taken per
            # sample over its attacks, as AutoAttack reports it.
            "robust_samples": encode_mask(clean_correct & correct),
            "seconds": round(seconds, 3),
        }

    if not attack.minimal:
        return [row(attack.norm, unit.epsilon, adv)]
    rows = [row(attack.norm, None, adv)]
    for norm, radii in (("linf", request.epsilons), ("l2", request.l2_epsilons)):
        rows += [row(norm, eps, project(adv, x, norm, eps)) for eps in radii]
    return rows


def outcome_stats(
    x: torch.Tensor, adv: torch.Tensor, clean_correct: torch.Tensor, correct: torch.Tensor
) -> dict:
    """Robust accuracy over all samples; success rate and perturbation sizes over the
    samples that were correct to begin with (the only ones attacked)."""
    robust = clean_correct & correct
    attacked = int(clean_correct.sum())
    delta = (adv - x)[clean_correct].flatten(1)
    linf, l2 = delta.abs().amax(1), delta.norm(dim=1)
    return {
        "robust_accuracy": _mean(robust),
        "attack_success_rate": (
            round(int((clean_correct & ~correct).sum()) / attacked, 6) if attacked else None
        ),
        "perturbation": {
            "linf_mean": _stat(linf.mean()) if attacked else 0.0,
            "linf_max": _stat(linf.max()) if attacked else 0.0,
            "l2_mean": _stat(l2.mean()) if attacked else 0.0,
            "l2_max": _stat(l2.max()) if attacked else 0.0,
        },
    }


def encode_mask(mask: torch.Tensor) -> str:
    """A boolean vector as hex, sample i at bit i (little-endian within each digit)."""
    bits = mask.bool().tolist()
    return "".join(
        f"{sum(1 << j for j, bit in enumerate(bits[i : i + 4]) if bit):x}"
        for i in range(0, len(bits), 4)
    )


def decode_mask(text: str, length: int) -> torch.Tensor:
    """The inverse of ``encode_mask``."""
    if len(text) != -(-length // 4):
        raise ValueError(f"a mask of {length} samples has {-(-length // 4)} hex digits")
    bits = [bool(int(digit, 16) >> j & 1) for digit in text for j in range(4)]
    return torch.tensor(bits[:length], dtype=torch.bool)


def _mean(mask: torch.Tensor) -> float:
    return round(float(mask.float().mean()), 6) if len(mask) else 0.0


def _stat(value: torch.Tensor) -> float:
    return round(float(value), 6)
