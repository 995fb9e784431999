"""The served network with its batch norms folded into the convolutions before them.

In eval mode a batch norm is a fixed per-channel affine map, so a convolution followed by
one equals a single convolution with scaled weights and a shifted bias. Folding removes
one pass over every activation per batch norm: on the CIFAR ResNet-20 (19 of them) it is
the largest single saving in a forward on the CPU (``benchmarks/bench_service.py``,
docs/service.md). The model the robustness suite attacks and the checkpoint keep their
batch norms; only the service's predict stage runs the folded copy, and only when it gives
the same logits (``TOLERANCE``) on a probe batch.

Folding traces the network with ``torch.fx``; a network that does not trace (Python
control flow on tensors, an exported program's batch fitting) is served as it is.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval

log = logging.getLogger(__name__)

# Largest difference in a logit the folded network may show on the probe batch: float32
# rounding of the folded weights moves logits by about 1e-6 on the ResNet-20.
TOLERANCE = 1e-4


def fold_batch_norms(
    network: nn.Module,
    input_shape: tuple[int, ...],
    name: str,
    device: torch.device | str = "cpu",
) -> nn.Module:
    """A folded copy of ``network`` (in eval mode), or ``network`` itself when there is
    nothing to fold or folding does not apply."""
    if not any(isinstance(m, _BatchNorm) for m in network.modules()):
        return network
    try:
        folded = _folded_copy(network.eval())
    except Exception as exc:  # noqa: BLE001 - fx raises many types on untraceable code
        log.info("model %s: batch norms not folded (%s: %s)", name, type(exc).__name__, exc)
        return network
    difference = largest_logit_change(network, folded, input_shape, (4,), device)
    if not keeps_logits(log, name, difference, "folded batch norms change", "unfolded"):
        return network
    folded_count = sum(isinstance(m, _BatchNorm) for m in network.modules())
    left = sum(isinstance(m, _BatchNorm) for m in folded.modules())
    log.info("model %s: %d batch norms folded into convolutions", name, folded_count - left)
    return folded


def largest_logit_change(
    network: nn.Module,
    served: nn.Module,
    input_shape: tuple[int, ...],
    batch_sizes: tuple[int, ...],
    device: torch.device | str = "cpu",
) -> float:
    """The largest difference in a logit between ``network`` and the copy of it to be
    ``served``, on random [0, 1] probe batches of each of ``batch_sizes`` (seeded, so the
    same at every load)."""
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        return max(
            float((network(probe) - served(probe)).abs().max())
            for probe in (
                torch.rand(rows, *input_shape, generator=generator).to(device)
                for rows in batch_sizes
            )
        )


def keeps_logits(
    logger: logging.Logger, name: str, difference: float, change: str, fallback: str
) -> bool:
    """Whether a served copy of model ``name``, whose logits differ from the network's by
    ``difference`` (``largest_logit_change``), is within ``TOLERANCE``. When it is not (or
    the difference is NaN), ``logger`` warns that ``change`` the logits and that the model
    is served ``fallback``: each step in front of serving (folding, the layout, freezing)
    falls back the same way."""
    if difference <= TOLERANCE:
        return True
    logger.warning("model %s: %s logits by %.2g; serving it %s", name, change, difference, fallback)
    return False


_CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _folded_copy(network: nn.Module) -> fx.GraphModule:
    """Trace a copy of ``network`` and fold each batch norm whose input is a convolution
    that nothing else reads; the original is untouched."""
    traced = fx.symbolic_trace(copy.deepcopy(network))
    modules = dict(traced.named_modules())
    for node in list(traced.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], _BatchNorm):
            continue
        source = node.args[0]
        if not (
            isinstance(source, fx.Node)
            and source.op == "call_module"
            and isinstance(modules[source.target], _CONVOLUTIONS)
            and len(source.users) == 1
            and modules[node.target].track_running_stats
        ):
            continue
        folded = fuse_conv_bn_eval(modules[source.target], modules[node.target])
        parent, _, leaf = source.target.rpartition(".")
        setattr(traced.get_submodule(parent), leaf, folded)
        node.replace_all_uses_with(source)
        traced.graph.erase_node(node)
    traced.graph.lint()
    traced.delete_all_unused_submodules()
    traced.recompile()
    return traced
