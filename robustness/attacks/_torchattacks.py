"""Glue for the attacks that call torchattacks 3.5.1 (APGD, APGD-T, Square).

torchattacks reseeds torch's global generator with the attack's ``seed`` on every call, so
each call gets a seed drawn from the generator the runner seeded for the unit: batches
differ, and a unit's result still depends on the request's seed alone.

torchattacks' ``__call__`` puts the model in eval mode and afterwards calls ``train()`` on
it if it was training, which switches every submodule to training mode: a wrapper built in
training mode would leave the deployed model it wraps training (a TQ model then runs its
soft staircase). ``call`` restores every submodule's own mode instead.

torchattacks is imported on first use, not with the attack table: importing it loads
scipy.stats (seconds on a busy CPU), which the service and every job would otherwise pay
at startup whether or not they run these attacks.
"""

from __future__ import annotations

import importlib

import torch
from torch import nn

# Our norm names and torchattacks'.
NORM_NAMES = {"linf": "Linf", "l2": "L2"}


def next_seed() -> int:
    """A seed for one torchattacks call, from torch's global generator."""
    return int(torch.randint(0, 2**31 - 1, ()))


def runner_up_targets(requested: int, n_classes: int) -> int:
    """How many runner-up classes a targeted attack (APGD-T, FAB-T) tries: those asked
    for, at most every class but the true one, so a preset's 9 targets run on a 3-class
    model as its 2 runner-ups."""
    if requested < 1:
        raise ValueError("target_classes must be >= 1")
    if n_classes < 2:
        raise ValueError(f"a targeted attack needs at least 2 classes; the model has {n_classes}")
    return min(requested, n_classes - 1)


def torchattacks_attack(name: str) -> type:
    """The torchattacks attack class ``name``, importing the library on first use."""
    return getattr(importlib.import_module("torchattacks"), name)


def call(attack, model_fn, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Run a torchattacks attack; every submodule of ``model_fn`` keeps its mode."""
    modes = [(m, m.training) for m in model_fn.modules()] if isinstance(model_fn, nn.Module) else []
    try:
        return attack(x, y)
    finally:
        for module, training in modes:
            module.training = training
