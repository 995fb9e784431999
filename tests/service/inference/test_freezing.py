"""The served network frozen into one TorchScript graph: the same probabilities at every
batch size, and any network the trace would get wrong is served eagerly instead."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from models.exported import ProgramNetwork
from models.registry import build_model
from service.inference.freezing import freeze, serving_network


def _probabilities(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return torch.softmax(network(x), dim=1)


def test_a_resnet_is_folded_frozen_and_answers_the_same_at_any_batch_size() -> None:
    torch.manual_seed(0)
    model = build_model(
        "resnet20", (3, 20, 24), 7, normalization={"mean": [0.5] * 3, "std": [0.25] * 3}
    ).eval()
    served = serving_network(model.cnn, (3, 20, 24), "resnet")
    assert isinstance(served, torch.jit.ScriptModule)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.cnn.modules())  # untouched
    generator = torch.Generator().manual_seed(1)
    for rows in (1, 2, 9, 16):
        x = torch.rand(rows, 3, 20, 24, generator=generator)
        torch.testing.assert_close(
            _probabilities(served, x), _probabilities(model.cnn, x), rtol=0, atol=1e-6
        )


class _BatchBaked(nn.Module):
    """Reshapes with the batch size as a Python int: a trace would keep the example's."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(2 * 6 * 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(x.reshape(int(x.shape[0]), -1))


class _Branchy(nn.Module):
    """Control flow on a tensor's value: a trace would keep one branch."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(2 * 6 * 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.mean() > 0.5:
            x = 1 - x
        return self.dense(x.flatten(1))


class _DifferentWhenTraced(nn.Module):
    """Answers differently while being traced, as a network with hidden state might."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(2 * 6 * 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shift = 1.0 if torch.jit.is_tracing() else 0.0
        return self.dense(x.flatten(1)) + shift


@pytest.mark.parametrize("network", [_BatchBaked, _Branchy, _DifferentWhenTraced])
def test_a_network_the_trace_gets_wrong_is_served_eagerly(network, caplog) -> None:
    eager = network().eval()
    with caplog.at_level(logging.INFO):
        assert freeze(eager, (2, 6, 6), "odd") is eager
    assert "eagerly" in caplog.text


def test_exported_programs_answer_the_same_at_every_batch_size_served() -> None:
    """An exported module refuses ``eval()``; a static-batch program is fitted to each batch
    by ``ProgramNetwork`` in Python. Whatever ``serving_network`` makes of them answers as
    the eager network does at every batch size up to the largest served."""
    torch.manual_seed(0)
    eager = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)
    ).eval()
    example = (torch.rand(3, 3, 8, 8),)
    dynamic = torch.export.export(
        eager, example, dynamic_shapes=({0: torch.export.Dim("batch", max=64)},)
    ).module()
    static = ProgramNetwork(torch.export.export(eager, example).module(), 3, 3)
    generator = torch.Generator().manual_seed(2)
    for program in (dynamic, static):
        served = serving_network(program, (3, 8, 8), "exported", max_rows=12)
        for rows in range(1, 13):
            x = torch.rand(rows, 3, 8, 8, generator=generator)
            torch.testing.assert_close(
                _probabilities(served, x), _probabilities(eager, x), rtol=0, atol=1e-6
            )
