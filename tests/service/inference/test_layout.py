"""Convolution weights stored channels-last for CPU serving: the same logits, the model
itself untouched, and any network the layout would change served as it was."""

from __future__ import annotations

import logging
import threading

import torch
from torch import nn

from models.registry import build_model
from service.inference.freezing import serving_network
from service.inference.layout import channels_last


def _convolution_weights(network: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in network.modules() if isinstance(m, nn.Conv2d)]


def test_a_resnet_is_served_channels_last_with_the_same_logits_and_left_untouched() -> None:
    torch.manual_seed(0)
    model = build_model("resnet20", (3, 20, 24), 7).eval()
    served = channels_last(model.cnn, (3, 20, 24), "resnet")
    assert served is not model.cnn
    weights = _convolution_weights(served)
    assert weights and all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
    # 1x1 shortcut weights are contiguous either way; the 3x3 ones show the original kept.
    assert not all(
        w.is_contiguous(memory_format=torch.channels_last) for w in _convolution_weights(model.cnn)
    )
    x = torch.rand(5, 3, 20, 24, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        torch.testing.assert_close(served(x), model.cnn(x), rtol=0, atol=1e-4)


def test_the_served_frozen_graph_keeps_its_weights_channels_last() -> None:
    """What predict runs carries the layout through freezing: the graph's 3x3 convolution
    weights (its tensor constants) are stored channels-last, and it answers as the model."""
    torch.manual_seed(0)
    model = build_model("resnet20", (3, 12, 12), 4).eval()
    served = serving_network(model.cnn, (3, 12, 12), "resnet")
    assert isinstance(served, torch.jit.ScriptModule)
    constants = [
        node.output().toIValue()
        for node in served.graph.findAllNodes("prim::Constant")
        if node.output().type().kind() == "TensorType"
    ]
    kernels = [c for c in constants if c.dim() == 4 and c.shape[-1] == 3]
    assert kernels and all(k.is_contiguous(memory_format=torch.channels_last) for k in kernels)
    x = torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        torch.testing.assert_close(served(x), model.cnn(x), rtol=0, atol=1e-4)


class _SmallConvolution(nn.Module):
    """A convolution and a dense layer on (2, 6, 6) inputs; subclasses say how the
    convolution's output reaches the dense layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.dense = nn.Linear(3 * 4 * 4, 2)


class _LayoutSensitive(_SmallConvolution):
    """Answers differently when its activations are stored channels-last."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        shift = 0.0 if y.is_contiguous() else 1.0
        return self.dense(y.flatten(1)) + shift


def test_a_network_the_layout_changes_is_served_as_it_was(caplog) -> None:
    network = _LayoutSensitive().eval()
    with caplog.at_level(logging.WARNING):
        assert channels_last(network, (2, 6, 6), "sensitive") is network
    assert "change logits" in caplog.text


def test_networks_without_2d_convolutions_and_other_devices_are_left_as_they_are() -> None:
    dense = nn.Sequential(nn.Flatten(), nn.Linear(2 * 6 * 6, 3)).eval()
    assert channels_last(dense, (2, 6, 6), "dense") is dense
    conv = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(3 * 4 * 4, 2)).eval()
    assert channels_last(conv, (2, 6, 6), "gpu", device=torch.device("cuda")) is conv
    assert channels_last(conv, (2, 6, 6), "conv") is not conv


class _ViewsItsActivations(_SmallConvolution):
    """Flattens with ``view``, as much code written for (N, C, H, W) does: a channels-last
    activation cannot be viewed that way, so the copy raises on its first probe."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.dense(y.view(y.shape[0], -1))


def test_a_network_that_views_its_activations_is_served_as_it_was(caplog) -> None:
    network = _ViewsItsActivations().eval()
    with caplog.at_level(logging.INFO):
        assert channels_last(network, (2, 6, 6), "viewing") is network
    assert "kept in its own layout (RuntimeError" in caplog.text
    served = serving_network(network, (2, 6, 6), "viewing", max_rows=9)
    x = torch.rand(9, 2, 6, 6, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        torch.testing.assert_close(served(x), network(x), rtol=0, atol=1e-5)


class _Uncopyable(nn.Module):
    """Holds a lock, which ``copy.deepcopy`` refuses, as a user's network might hold a
    handle of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.lock = threading.Lock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).flatten(1)


def test_a_network_that_cannot_be_copied_is_served_as_it_was(caplog) -> None:
    network = _Uncopyable().eval()
    with caplog.at_level(logging.INFO):
        assert channels_last(network, (2, 6, 6), "uncopyable") is network
    assert "kept in its own layout" in caplog.text
    assert not network.conv.weight.is_contiguous(memory_format=torch.channels_last)
