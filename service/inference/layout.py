"""The served network with its convolution weights stored channels-last.

PyTorch keeps a 4-D tensor as (N, C, H, W) in memory by default. On the CPU a convolution
runs through oneDNN, whose kernels want the channels innermost: with the weights stored
that way every convolution's output is too, and the network runs in that layout from its
first convolution to its last instead of converting back and forth around each one. On the
2-core development machine (one torch thread, each network as the service runs it: the
ResNet-20 frozen, the basic CNNs eager; docs/service.md, "Channels-last convolutions")
a forward of 8 rows took 3.50 ms instead of 4.50 on the CIFAR ResNet-20, 1.46 instead of
1.88 on the basic CNN for CIFAR-10 and 1.02 instead of 1.31 on the one for MNIST; 16 rows
6.27 instead of 8.27 ms on the ResNet-20. Networks of other shapes (depthwise-separable
blocks, a 5 x 5 LeNet on grey 28 x 28, a 7 x 7 stride-2 stem on 96 x 96) ran faster or the
same, never slower, so every network that passes the check is converted.

The served copy answers with the same logits up to float32 rounding (``TOLERANCE``, checked
on probe batches at load, as folding is); the model the robustness suite attacks and the
checkpoint are untouched. Only CPU serving converts: nothing was measured on a GPU here.
A network with no ``nn.Conv2d`` (an exported program runs its convolutions as graph ops,
not modules), or whose copy fails the check or raises on it (code that flattens an
activation with ``view`` assumes the default layout), is served as it was.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

from service.inference.folding import keeps_logits, largest_logit_change

log = logging.getLogger(__name__)


def channels_last(
    network: nn.Module,
    input_shape: tuple[int, ...],
    name: str,
    device: torch.device | str = "cpu",
) -> nn.Module:
    """A channels-last copy of ``network`` (in eval mode), or ``network`` itself where
    that does not apply or changes its logits."""
    if torch.device(device).type != "cpu" or len(input_shape) != 3:
        return network
    if not any(isinstance(m, nn.Conv2d) for m in network.modules()):
        return network
    try:
        converted = copy.deepcopy(network).to(memory_format=torch.channels_last)
        difference = largest_logit_change(network, converted, input_shape, (1, 4), device)
    except Exception as exc:  # noqa: BLE001 - a user's network may refuse a copy or the layout
        log.info("model %s: kept in its own layout (%s: %s)", name, type(exc).__name__, exc)
        return network
    if not keeps_logits(log, name, difference, "channels-last weights change", "as it was"):
        return network
    log.info("model %s: convolutions run channels-last", name)
    return converted
