import numpy as np
import pytest
import torch

from models.quantizers import (
    MIN_GAP,
    ConstantQuantizer,
    StaircaseTable,
    TrainableQuantizer,
    build_quantizer,
    hard_staircase,
    soft_staircase,
    uniform_thresholds,
)


@pytest.mark.parametrize("levels", [2, 3, 4, 8])
def test_hard_output_takes_exactly_the_l_levels(levels):
    quantizer = ConstantQuantizer(levels).eval()
    x = torch.linspace(0, 1, 10_001)
    out = quantizer(x)
    expected = torch.arange(levels, dtype=torch.float32) / (levels - 1)
    assert torch.equal(torch.unique(out), expected)


def test_uniform_thresholds_round_to_nearest_level():
    assert torch.allclose(uniform_thresholds(2), torch.tensor([0.5]))
    assert torch.allclose(uniform_thresholds(3), torch.tensor([0.25, 0.75]))
    x = torch.tensor([0.1, 0.3, 0.6, 0.9])
    assert torch.equal(ConstantQuantizer(3).eval()(x), torch.tensor([0.0, 0.5, 0.5, 1.0]))


def test_staircase_is_strictly_greater_than_threshold():
    thresholds = torch.tensor([0.5])
    assert hard_staircase(torch.tensor([0.5, 0.5001]), thresholds).tolist() == [0.0, 1.0]


@pytest.mark.parametrize("levels", [2, 3, 4, 7, 8, 16])
def test_the_numpy_staircase_equals_hard_staircase_bit_for_bit(levels):
    generator = torch.Generator().manual_seed(levels)
    thresholds = torch.sort(torch.rand(levels - 1, generator=generator)).values
    x = torch.rand(4, 3, 32, 32, generator=generator)
    # Pixels exactly on, and one float step either side of, every threshold.
    edges = torch.cat([thresholds, torch.nextafter(thresholds, torch.ones_like(thresholds))])
    edges = torch.cat([edges, torch.nextafter(thresholds, torch.zeros_like(thresholds))])
    x.view(-1)[: edges.numel()] = edges
    x.view(-1)[-3:] = torch.tensor([0.0, 1.0, 0.5])
    expected = hard_staircase(x, thresholds)
    got = StaircaseTable(thresholds)(x.numpy())
    assert got.dtype == np.float32
    assert np.array_equal(got.view(np.uint32), expected.numpy().view(np.uint32))


def test_soft_approaches_hard_as_steepness_grows():
    thresholds = torch.tensor([0.2, 0.5, 0.7])
    x = torch.rand(5000)
    x = x[((x.unsqueeze(-1) - thresholds).abs() > 0.02).all(-1)]  # away from the steps
    hard = hard_staircase(x, thresholds)
    errors = [(soft_staircase(x, thresholds, h) - hard).abs().max().item() for h in (10, 100, 1000)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-6


def test_gradients_reach_thresholds_in_soft_mode_only():
    quantizer = TrainableQuantizer(3, steepness=20.0)
    x = torch.rand(64, 1, 28, 28)
    quantizer(x, "soft").sum().backward()
    assert quantizer.gap_logits.grad is not None
    assert quantizer.gap_logits.grad.abs().sum() > 0

    quantizer.zero_grad(set_to_none=True)
    out = quantizer(x.requires_grad_(), "hard")
    assert not out.requires_grad  # the hard staircase carries no gradient at all


def test_default_mode_follows_train_and_eval_for_tq_only():
    x = torch.tensor([0.45, 0.55])
    hard = torch.tensor([0.0, 1.0])
    trainable = TrainableQuantizer(2, steepness=5.0)
    assert not torch.equal(trainable.train()(x), hard)
    assert torch.equal(trainable.eval()(x), hard)
    constant = ConstantQuantizer(2, steepness=5.0)
    assert torch.equal(constant.train()(x), hard)  # CQ has nothing to learn: train on hard
    assert not torch.equal(constant(x, "soft"), hard)


def test_thresholds_stay_sorted_in_unit_interval_whatever_the_parameters():
    quantizer = TrainableQuantizer(5)
    for _ in range(200):
        with torch.no_grad():
            quantizer.gap_logits.copy_(torch.randn(5) * 10)
        t = quantizer.thresholds
        assert (t >= MIN_GAP * 0.999).all() and (t <= 1 - MIN_GAP * 0.999).all()
        assert (torch.diff(t) >= MIN_GAP * 0.999).all()


def test_thresholds_stay_sorted_under_aggressive_training():
    torch.manual_seed(0)
    quantizer = TrainableQuantizer(4, steepness=30.0)
    optimizer = torch.optim.SGD(quantizer.parameters(), lr=50.0)
    target = torch.rand(256)
    for _ in range(100):
        x = torch.rand(256)
        loss = ((quantizer(x, "soft") - target) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        t = quantizer.thresholds.detach()
        assert (t > 0).all() and (t < 1).all() and (torch.diff(t) > 0).all()


def test_trainable_starts_at_the_given_thresholds():
    quantizer = TrainableQuantizer(3, torch.tensor([0.1, 0.8]))
    assert torch.allclose(quantizer.thresholds, torch.tensor([0.1, 0.8]), atol=1e-6)
    with pytest.raises(ValueError, match="apart"):
        TrainableQuantizer(3, torch.tensor([0.5, 0.5005]))


@pytest.mark.parametrize(
    ("levels", "thresholds", "message"),
    [
        (1, None, "levels must be an integer >= 2"),
        (3, [0.5], "3 levels need 2 thresholds"),
        (3, [0.6, 0.4], "strictly increasing"),
        (2, [1.0], "strictly inside"),
        (2, [float("nan")], "finite"),
    ],
)
def test_invalid_quantizers_are_refused(levels, thresholds, message):
    with pytest.raises(ValueError, match=message):
        build_quantizer("cq", levels, thresholds)


def test_unknown_kind_lists_valid_kinds():
    with pytest.raises(ValueError, match="valid kinds: none, cq, tq"):
        build_quantizer("jpeg")
    assert build_quantizer("none") is None


def test_spec_records_kind_levels_and_thresholds():
    spec = build_quantizer("tq", 3, [0.3, 0.6], 12.0).spec()
    assert spec["kind"] == "tq" and spec["levels"] == 3 and spec["steepness"] == 12.0
    assert spec["thresholds"] == pytest.approx([0.3, 0.6], abs=1e-6)
