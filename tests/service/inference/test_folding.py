"""Batch norms folded into the convolutions before them: the same probabilities, fewer
passes; a network that cannot be traced is served as it is."""

from __future__ import annotations

import logging

import torch
from torch import nn

from models.registry import build_model
from service.inference.folding import fold_batch_norms


def _resnet() -> nn.Module:
    torch.manual_seed(0)
    model = build_model(
        "resnet20", (3, 20, 24), 7, normalization={"mean": [0.5] * 3, "std": [0.25] * 3}
    )
    with torch.no_grad():  # statistics unlike the initial ones, so folding has work to do
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
    return model.eval()


def test_a_resnet_is_folded_and_answers_the_same() -> None:
    model = _resnet()
    folded = fold_batch_norms(model.cnn, (3, 20, 24), "resnet")
    assert folded is not model.cnn
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.cnn.modules())  # untouched
    x = torch.rand(9, 3, 20, 24, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        direct = torch.softmax(model.cnn(x), dim=1)
        served = torch.softmax(folded(x), dim=1)
    torch.testing.assert_close(served, direct, rtol=0, atol=1e-6)


def test_nothing_to_fold_or_untraceable_networks_are_served_as_they_are(caplog) -> None:
    basic = build_model("cleverhans-basic-cnn", (1, 28, 28), 10).eval()
    assert fold_batch_norms(basic.cnn, (1, 28, 28), "basic") is basic.cnn

    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # control flow on a tensor: fx cannot trace it
                x = x * 2
            return self.bn(self.conv(x)).flatten(1)

    branchy = Branchy().eval()
    with caplog.at_level(logging.INFO):
        assert fold_batch_norms(branchy, (1, 8, 8), "branchy") is branchy
    assert "batch norms not folded" in caplog.text
