"""Threat-model surfaces: what a gradient attacker gets through the quantizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cleverhans.torch.attacks.fast_gradient_method import fast_gradient_method

from robustness.attacks import ATTACKS
from robustness.threats import (
    BPDAClassifier,
    ZeroGradientBridge,
    applies,
    frozen_copy,
    probe_gradients,
)


def test_bpda_gradients_are_nonzero_where_naive_ones_are_missing(masked_model, eval_set):
    model = frozen_copy(masked_model)
    x, y = eval_set.images[:16], eval_set.labels[:16]

    naive = probe_gradients(model, x, y)
    identity = probe_gradients(BPDAClassifier(model, "identity"), x, y)
    soft = probe_gradients(BPDAClassifier(model, "soft"), x, y)

    assert naive.status == "none" and naive.zero_fraction == 1.0
    for bpda in (identity, soft):
        assert bpda.status == "ok"
        assert bpda.zero_fraction == 0.0
        assert bpda.mean_abs > 0


def test_undefended_model_has_ordinary_gradients(undefended_model, eval_set):
    probe = probe_gradients(frozen_copy(undefended_model), eval_set.images[:8], eval_set.labels[:8])
    assert probe.status == "ok" and probe.zero_fraction == 0.0


@pytest.mark.parametrize("backward", ["identity", "soft"])
def test_bpda_forward_is_exactly_the_served_model(masked_model, eval_set, backward):
    model = frozen_copy(masked_model)
    x = eval_set.images
    with torch.no_grad():
        assert torch.equal(BPDAClassifier(model, backward)(x), model(x))


def test_soft_backward_is_the_soft_staircase_slope(masked_model):
    model = frozen_copy(masked_model)
    bpda = BPDAClassifier(model, "soft")
    # Pixels far from the 0.5 threshold get almost no gradient; pixels on it get the most.
    x = torch.full((1, 1, 28, 28), 0.02)
    x[..., :14, :] = 0.5
    x.requires_grad_(True)
    bpda(x).sum().backward()
    near, far = x.grad[..., :14, :].abs().mean(), x.grad[..., 14:, :].abs().mean()
    assert near > 100 * far


def test_zero_gradient_bridge_keeps_values_and_gives_zeros_not_none(masked_model, eval_set):
    model = frozen_copy(masked_model)
    bridge = ZeroGradientBridge(model)
    x = eval_set.images[:8].clone().requires_grad_(True)
    logits = bridge(x)
    assert torch.equal(logits.detach(), model(x).detach())
    torch.nn.functional.cross_entropy(logits, eval_set.labels[:8]).backward()
    assert x.grad is not None
    assert torch.count_nonzero(x.grad) == 0


def test_cleverhans_fgsm_through_the_bridge_runs_and_moves_nothing(masked_model, eval_set):
    bridge = ZeroGradientBridge(frozen_copy(masked_model))
    x, y = eval_set.images[:8], eval_set.labels[:8]
    adv = fast_gradient_method(bridge, x, 0.3, np.inf, clip_min=0.0, clip_max=1.0, y=y)
    assert torch.equal(adv.detach(), x)


def test_frozen_copy_leaves_the_callers_model_alone(masked_model):
    masked_model.train()
    try:
        clone = frozen_copy(masked_model)
        assert not clone.training
        assert not any(p.requires_grad for p in clone.parameters())
        assert masked_model.training
        assert all(p.requires_grad for p in masked_model.parameters())
    finally:
        masked_model.eval()


def test_bpda_refuses_a_model_without_quantizer(undefended_model):
    with pytest.raises(ValueError, match="needs a quantizer"):
        BPDAClassifier(undefended_model)


def test_gradient_attacks_and_query_attacks_split_between_threat_models():
    assert applies("bpda", ATTACKS["pgd"]) and not applies("gradient_free", ATTACKS["pgd"])
    assert applies("gradient_free", ATTACKS["spsa"]) and not applies("naive", ATTACKS["spsa"])
    assert applies("gradient_free", ATTACKS["noise"])
    with pytest.raises(ValueError, match="valid: transfer, naive, bpda, gradient_free"):
        applies("grey_box", ATTACKS["pgd"])
