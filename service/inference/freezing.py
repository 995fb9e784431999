"""The network the predict stage runs: batch norms folded, weights stored channels-last
on the CPU (``service/inference/layout.py``), then frozen into one graph.

Eager PyTorch runs a network op by op from Python. Each op lets go of the interpreter lock
(the GIL) while it computes and must take it back to return: some sixty times a forward on
the CIFAR ResNet-20. The service's event loop (reading, decoding and answering requests)
holds that lock whenever it runs Python, so under load the inference thread waits for it
at every op, and the two threads hand it back and forth all through a batch. A traced and
frozen TorchScript graph runs the whole forward in PyTorch's C++ interpreter, which needs
the lock far less often: beside a thread running plain Python, the frozen ResNet-20 kept
325-341 rows/s where the eager one got 27 (about 600 alone).

On the 2-core development machine, one serving process, the ResNet-20 and 16 connections
(docs/service.md, "A real model"), the frozen graph took the server's CPU per request from
2.97-3.25 ms to 2.35-2.56: the inference thread from 1.84-2.01 to 1.48-1.59 ms, the event
loop from 1.12-1.24 to 0.87-0.99. Alone, with no lock to share, a forward of 8 rows costs
1.5 to 1.7 ms a row either way, the frozen graph a little less: the saving is the lock.

Tracing records the ops one example runs, so a network whose control flow depends on its
input, or on the batch size, would be served wrong. The frozen graph is therefore served
only when it gives the eager network's logits (``TOLERANCE``) on probe batches of one
row, of an odd size and of the largest batch the service runs, none of them the traced
size, and tracing raised no ``TracerWarning``: any value of a tensor read into Python
while tracing (a branch on a tensor, an exported program's batch fitting in
``models/exported.py``, the basic CNN's TensorFlow "SAME" padding worked out from the
input's size) may have been baked into the graph, so such a network is not frozen, even
where the probes could not tell. Anything else is served eagerly, as it was before.
``torch.jit.trace`` and ``torch.jit.freeze`` are deprecated in torch 2.13; should a later
torch drop them, every model is served eagerly and only the saving above is lost.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

# The frozen graph is held to folding's bound on a logit's change (float32 rounding).
from service.inference.folding import fold_batch_norms, keeps_logits, largest_logit_change
from service.inference.layout import channels_last

log = logging.getLogger(__name__)

# Batch size of the traced example; the probes' sizes differ from it, so a size baked into
# the trace shows up as a wrong answer or an error.
_TRACE_ROWS = 4
_ODD_ROWS = 7


def serving_network(
    network: nn.Module,
    input_shape: tuple[int, ...],
    name: str,
    device: torch.device | str = "cpu",
    max_rows: int = 16,
) -> nn.Module:
    """What the predict stage runs for ``network`` (in eval mode) on batches of at most
    ``max_rows``: batch norms folded where that gives the same logits, its convolutions
    channels-last on the CPU where that does, then frozen where that does. The benchmark
    of the forward limit (``benchmarks/forward_limit.py``) runs the same, so the limit
    stays the fastest forward known here."""
    folded = fold_batch_norms(network, input_shape, name, device)
    laid_out = channels_last(folded, input_shape, name, device)
    return freeze(laid_out, input_shape, name, device, max_rows)


def freeze(
    network: nn.Module,
    input_shape: tuple[int, ...],
    name: str,
    device: torch.device | str = "cpu",
    max_rows: int = 16,
) -> nn.Module:
    """``network`` (in eval mode) traced and frozen, or ``network`` itself when that does
    not apply to batches of 1 to ``max_rows`` rows."""
    probe_rows = tuple(sorted({1, _ODD_ROWS, max_rows} - {_TRACE_ROWS}))
    example = torch.rand(_TRACE_ROWS, *input_shape, generator=torch.Generator().manual_seed(1)).to(
        device
    )
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("ignore", DeprecationWarning)  # trace and freeze: see above
            warnings.simplefilter("always", torch.jit.TracerWarning)
            with torch.no_grad():
                traced = torch.jit.trace(network, example, check_trace=False)
                frozen = torch.jit.freeze(traced)
        doubts = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
        if doubts:
            first = str(doubts[0].message).splitlines()[0]
            log.info("model %s: served eagerly, not frozen (tracing warned: %s)", name, first)
            return network
        difference = largest_logit_change(network, frozen, input_shape, probe_rows, device)
    except Exception as exc:  # noqa: BLE001 - tracing raises many types on code it cannot follow
        log.info("model %s: served eagerly, not frozen (%s: %s)", name, type(exc).__name__, exc)
        return network
    if not keeps_logits(log, name, difference, "the frozen graph changes", "eagerly"):
        return network
    log.info("model %s: served as a frozen TorchScript graph", name)
    return frozen
