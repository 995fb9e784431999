"""A few adversarial examples per (attack, threat model, radius), kept with the report.

Numbers say how often an attack wins; a picture shows what winning looks like: the clean
image, the crafted one, what the deployed model's quantizer made of each, and both
predictions. Each (attack, threat model, norm, radius) keeps at most ``per_unit`` samples
the model got right on the clean image, those the attack fooled first, and a report keeps
at most ``max_bytes`` of encoded images, so a job database holding many reports stays small.
Images are PNG, base64 in the JSON.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from robustness.judge import predict, project
from robustness.png import png_base64 as encode_base64

if TYPE_CHECKING:
    from models.cnn import QuantizedClassifier
    from robustness.attacks import Attack
    from robustness.plan import Unit
    from robustness.request import SuiteRequest

EXAMPLES_PER_UNIT = 3
# Rows per forward pass when predicting the crafted images.
PREDICT_BATCH = 256
# About 2,000 MNIST examples or 150 CIFAR-10 ones (four images each); what does not fit
# is dropped, and the report says how many groups were left out.
MAX_EXAMPLE_BYTES = 2 * 2**20


class ExampleCollector:
    """Gathers example groups as units finish; bounded in count and in bytes."""

    def __init__(self, per_unit: int = EXAMPLES_PER_UNIT, max_bytes: int = MAX_EXAMPLE_BYTES):
        self.per_unit, self.max_bytes = per_unit, max_bytes
        self.groups: list[dict] = []
        self.dropped = 0
        self._bytes = 0

    def add_unit(
        self,
        unit: Unit,
        attack: Attack,
        target: QuantizedClassifier,
        x: torch.Tensor,
        adv: torch.Tensor,
        y: torch.Tensor,
        clean_correct: torch.Tensor,
        request: SuiteRequest,
    ) -> None:
        """One group per radius the unit's rows are judged at (sanity runs are left out)."""
        if unit.sanity or self.per_unit == 0:
            return
        if attack.minimal:
            radii = [("linf", e) for e in request.epsilons]
            radii += [("l2", e) for e in request.l2_epsilons]
        else:
            radii = [(attack.norm, unit.epsilon)]
        for norm, eps in radii:
            images = project(adv, x, norm, eps) if attack.minimal else adv
            group = example_group(target, x, images, y, clean_correct, self.per_unit)
            size = sum(len(v or "") for e in group for v in e["images"].values())
            if self._bytes + size > self.max_bytes:
                self.dropped += 1
                continue
            self._bytes += size
            self.groups.append(
                {
                    "attack": unit.attack,
                    "threat_model": unit.threat_model,
                    "norm": norm,
                    "epsilon": eps,
                    "examples": group,
                }
            )

    def as_dict(self) -> dict:
        return {
            "per_group": self.per_unit,
            "groups": self.groups,
            "dropped_groups": self.dropped,
        }


def example_group(
    target: QuantizedClassifier,
    x: torch.Tensor,
    adv: torch.Tensor,
    y: torch.Tensor,
    clean_correct: torch.Tensor,
    count: int,
) -> list[dict]:
    """Up to ``count`` samples the model got right clean, those it gets wrong crafted first."""
    with torch.no_grad():
        adv_pred = predict(target, adv, PREDICT_BATCH)
    fooled = clean_correct & (adv_pred != y)
    held = clean_correct & (adv_pred == y)
    chosen = torch.cat([fooled.nonzero().flatten(), held.nonzero().flatten()])[:count].tolist()
    examples = []
    for i in chosen:
        examples.append(
            {
                "index": i,
                "label": int(y[i]),
                "clean_prediction": int(y[i]),  # only clean-correct samples are chosen
                "adversarial_prediction": int(adv_pred[i]),
                "images": {
                    "clean": png_base64(x[i]),
                    "adversarial": png_base64(adv[i]),
                    "clean_quantized": _quantized(target, x[i]),
                    "adversarial_quantized": _quantized(target, adv[i]),
                },
            }
        )
    return examples


def _quantized(target: QuantizedClassifier, image: torch.Tensor) -> str | None:
    if target.quantizer is None:
        return None
    with torch.no_grad():
        return png_base64(target.quantize(image[None], "hard")[0])


def png_base64(image: torch.Tensor) -> str:
    """(C, H, W) in [0, 1] -> base64 PNG, optimized: reports keep these."""
    return encode_base64(image.detach().cpu().numpy(), optimize=True)
