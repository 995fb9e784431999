"""Adversarial training: the inner maximisation, and the per-epoch catastrophic-overfitting check.

Four methods, each named after its paper:

* ``pgd``: Madry et al. 2018 (arXiv 1706.06083). Train on PGD examples: a uniform random
  start in the L-inf ball, ``steps`` signed-gradient steps of ``step_size``, each projected
  back onto the ball and into [0, 1].
* ``trades``: Zhang et al. 2019 (arXiv 1901.08573). Train on cross-entropy at the clean
  input plus ``beta`` times KL(f(x) || f(x')), where x' maximises that KL inside the ball
  (small Gaussian start, ``steps`` signed steps).
* ``fgsm-rs``: Wong, Rice and Kolter 2020 (arXiv 2001.03994), "fast" training. One signed
  step of 1.25 eps from a uniform random start, clipped to the ball. Cheap, and known to
  overfit catastrophically (PGD accuracy collapses within an epoch), hence the check below.
* ``rslad``: Zi et al. 2021 (arXiv 2108.07969), robust soft-label adversarial distillation.
  A frozen teacher (a more robust checkpoint) labels each clean image with its
  probabilities T(x); the student trains on alpha KL(T(x) || S(x')) + (1 - alpha)
  KL(T(x) || S(x)), where x' maximises KL(T(x) || S(x')) inside the ball (TRADES' inner
  attack with the teacher's labels as its target). Soft labels from a robust teacher are
  easier to fit than one-hot labels of adversarial examples, which is what a small network
  that underfits the adversarial objective lacks.

How the attack sees a quantizer. The served model quantizes with the hard staircase, whose
gradient is zero almost everywhere, so an attack through it would learn nothing (gradient
masking, the very thing the robustness suite reports). During training the examples are
crafted as the suite's adaptive attack crafts them: BPDA, the hard staircase forward and
the straight-through identity backward (``models.quantizers.straight_through``). The
training step itself then runs the model as training always does (TQ's soft staircase, so
its thresholds keep learning on the adversarial examples).

The check. After each epoch a fixed held-out batch (the last test images, outside the
1,000-image evaluation subset) is attacked with PGD through BPDA, in eval mode. Its accuracy
is recorded in the history; a fall of ``COLLAPSE_DROP`` or more below the best epoch so far
is catastrophic overfitting, logged as a warning and recorded in the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from models.cnn import QuantizedClassifier
from models.quantizers import straight_through
from training.config import ADVERSARIAL_METHODS as METHODS
from training.config import Adversarial as Method

# A drop in held-out PGD accuracy this large below the best epoch is called a collapse:
# catastrophic overfitting takes PGD accuracy from tens of percent to near zero at once.
COLLAPSE_DROP = 0.2
CHECK_STEPS = 10


@dataclass(frozen=True)
class AdversarialSettings:
    method: Method
    epsilon: float
    steps: int
    step_size: float
    trades_beta: float = 6.0
    rslad_alpha: float = 5 / 6
    # RSLAD's frozen teacher, in eval mode: its served forward labels the clean images.
    teacher: nn.Module | None = None


def attack_view(model: QuantizedClassifier, x: torch.Tensor) -> torch.Tensor:
    """Logits as the adaptive attacker computes them: BPDA through a quantizer, if any."""
    if model.quantizer is None:
        return model(x)
    return model.cnn(straight_through(x, model.quantizer))


def _input_gradient(loss: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def _project(x_adv: torch.Tensor, x: torch.Tensor, epsilon: float) -> torch.Tensor:
    return torch.min(torch.max(x_adv, x - epsilon), x + epsilon).clamp_(0.0, 1.0)


def pgd_examples(
    model: QuantizedClassifier,
    x: torch.Tensor,
    y: torch.Tensor,
    epsilon: float,
    steps: int,
    step_size: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """L-inf PGD with a uniform random start, maximising cross-entropy (Madry et al.)."""
    noise = torch.rand(x.shape, generator=generator).to(x.device) * 2 - 1
    x_adv = (x + epsilon * noise).clamp(0.0, 1.0)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(attack_view(model, x_adv), y)
            grad = _input_gradient(loss, x_adv)
        x_adv = _project(x_adv.detach() + step_size * grad.sign(), x, epsilon)
    return x_adv.detach()


def kl_examples(
    model: QuantizedClassifier,
    x: torch.Tensor,
    target: torch.Tensor,
    settings: AdversarialSettings,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """TRADES' inner attack: x' maximising KL(target || model(x')) inside the ball, from a
    small Gaussian start. ``target`` holds probabilities: the model's own on the clean
    images (TRADES) or a teacher's (RSLAD)."""
    noise = torch.randn(x.shape, generator=generator).to(x.device)
    x_adv = (x + 0.001 * noise).clamp(0.0, 1.0)
    for _ in range(settings.steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            log_adv = F.log_softmax(attack_view(model, x_adv), dim=1)
            grad = _input_gradient(F.kl_div(log_adv, target, reduction="sum"), x_adv)
        x_adv = _project(x_adv.detach() + settings.step_size * grad.sign(), x, settings.epsilon)
    return x_adv.detach()


def _clean_and_adversarial_logits(
    trainable: nn.Module, x: torch.Tensor, x_adv: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    both = trainable(torch.cat([x, x_adv]))  # one pass, so DDP sees one forward
    return both[: len(x)], both[len(x) :]


def adversarial_loss(
    settings: AdversarialSettings,
    model: QuantizedClassifier,
    trainable: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The training loss on this batch and the logits it was computed on.

    ``model`` is the bare model the attack runs on (no DDP wrapper, so crafting examples
    synchronises nothing); ``trainable`` is what the optimiser's step goes through.
    """
    if settings.method == "pgd":
        x_adv = pgd_examples(
            model, x, y, settings.epsilon, settings.steps, settings.step_size, generator
        )
        logits = trainable(x_adv)
        return F.cross_entropy(logits, y), logits
    if settings.method == "fgsm-rs":
        x_adv = pgd_examples(model, x, y, settings.epsilon, 1, settings.step_size, generator)
        logits = trainable(x_adv)
        return F.cross_entropy(logits, y), logits
    if settings.method == "trades":
        with torch.no_grad():
            clean = F.softmax(attack_view(model, x), dim=1)
        x_adv = kl_examples(model, x, clean, settings, generator)
        logits, logits_adv = _clean_and_adversarial_logits(trainable, x, x_adv)
        robust = F.kl_div(
            F.log_softmax(logits_adv, dim=1), F.softmax(logits, dim=1), reduction="batchmean"
        )
        return F.cross_entropy(logits, y) + settings.trades_beta * robust, logits
    if settings.method == "rslad":
        if settings.teacher is None:
            raise ValueError("rslad needs a teacher")
        with torch.no_grad():
            soft = F.softmax(settings.teacher(x), dim=1)
        x_adv = kl_examples(model, x, soft, settings, generator)
        logits, logits_adv = _clean_and_adversarial_logits(trainable, x, x_adv)
        alpha = settings.rslad_alpha
        robust = F.kl_div(F.log_softmax(logits_adv, dim=1), soft, reduction="batchmean")
        natural = F.kl_div(F.log_softmax(logits, dim=1), soft, reduction="batchmean")
        loss = alpha * robust + (1 - alpha) * natural
        # The logits on the adversarial examples: the epoch's training accuracy is the
        # student's under attack, as for pgd.
        return loss, logits_adv
    raise ValueError(f"unknown adversarial method {settings.method!r}; valid: {METHODS[1:]}")


def held_out_pgd_accuracy(
    model: QuantizedClassifier,
    x: torch.Tensor,
    y: torch.Tensor,
    epsilon: float,
    batch_size: int = 256,
) -> float:
    """PGD-10 (step eps/4, fixed random start) accuracy through BPDA, in eval mode."""
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(0)
    correct = 0
    for start in range(0, len(y), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        x_adv = pgd_examples(model, xb, yb, epsilon, CHECK_STEPS, epsilon / 4, generator)
        with torch.no_grad():
            correct += (model(x_adv).argmax(1) == yb).sum().item()
    model.train(was_training)
    return correct / max(len(y), 1)


def collapse_epoch(history: list[dict]) -> int | None:
    """The first epoch whose held-out PGD accuracy fell COLLAPSE_DROP below the best before it."""
    best = None
    for record in history:
        accuracy = record.get("pgd_accuracy")
        if accuracy is None:
            continue
        if best is not None and accuracy <= best - COLLAPSE_DROP:
            return record["epoch"]
        best = accuracy if best is None else max(best, accuracy)
    return None
