import pytest
import torch
from torch import nn

from training.config import TrainConfig
from training.ema import WeightAverage


def test_the_average_follows_the_weights_with_a_warm_up_then_the_decay():
    live = nn.Linear(2, 1)
    with torch.no_grad():
        live.weight.fill_(0.0)
        live.bias.fill_(0.0)
    average = WeightAverage(live, decay=0.5)
    expected = torch.zeros(1, 2)
    for step in range(4):
        with torch.no_grad():
            live.weight.fill_(float(step + 1))
        average.update(live)
        decay = min(0.5, (1 + step) / (10 + step))
        expected = decay * expected + (1 - decay) * (step + 1)
        torch.testing.assert_close(average.model.weight, expected)
    assert average.updates == 4
    # the copy is frozen: it never takes gradients of its own
    assert not any(p.requires_grad for p in average.model.parameters())


def test_buffers_are_copied_not_averaged():
    live = nn.BatchNorm1d(3)
    average = WeightAverage(live, decay=0.9)
    with torch.no_grad():
        live.running_mean.fill_(5.0)
    average.update(live)
    torch.testing.assert_close(average.model.running_mean, torch.full((3,), 5.0))


@pytest.mark.parametrize("decay", [0, 1, -0.5, 1.5])
def test_a_decay_outside_zero_one_is_refused(decay):
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(nn.Linear(1, 1), decay)
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig("mnist", "none", "o", "d", ema_decay=decay)
