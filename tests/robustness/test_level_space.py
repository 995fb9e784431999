"""The level-space attack against brute force, and its map back to real inputs.

A tiny quantized model on 1x4x4 images whose pixels sit either far from the 0.5 threshold
(no budget moves them) or within eps of it (flippable): with six flippable pixels the 64
level configurations can all be tried, so the attack's answer can be checked exactly.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from models.cnn import QuantizedClassifier
from models.quantizers import ConstantQuantizer
from robustness.attacks._levels import (
    grid_steps,
    level_box,
    levels_of,
    on_grid,
    realize,
    verified,
)
from robustness.attacks.level_space import LevelSpace
from robustness.attacks.level_space_8bit import LevelSpace8Bit
from robustness.request import SuiteRequest
from robustness.runner import run_suite

EPS = 0.1
FLIPPABLE = (0, 3, 5, 6, 10, 15)  # flat pixel indices within EPS of the threshold


def tiny_model(seed: int, hidden: int = 12) -> QuantizedClassifier:
    torch.manual_seed(seed)
    cnn = nn.Sequential(nn.Flatten(), nn.Linear(16, hidden), nn.ReLU(), nn.Linear(hidden, 3))
    return QuantizedClassifier(cnn, ConstantQuantizer(2)).eval().requires_grad_(False)


def tiny_image(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    far = torch.where(torch.rand(16, generator=g) < 0.5, 0.05, 0.95)
    near = torch.where(torch.rand(16, generator=g) < 0.5, 0.46, 0.54)
    flippable = torch.zeros(16, dtype=torch.bool)
    flippable[list(FLIPPABLE)] = True
    return torch.where(flippable, near, far).view(1, 1, 4, 4)


def brute_force(model: QuantizedClassifier, x: torch.Tensor, y: int) -> set[tuple[int, ...]]:
    """Every level configuration of the flippable pixels that the CNN gets wrong."""
    clean = levels_of(x, model.quantizer.thresholds).flatten()
    wrong = set()
    for bits in itertools.product((0, 1), repeat=len(FLIPPABLE)):
        levels = clean.clone()
        levels[list(FLIPPABLE)] = torch.tensor(bits)
        if int(model.cnn(levels.float().view(1, 1, 4, 4)).argmax(1)) != y:
            wrong.add(bits)
    return wrong


def test_the_attack_succeeds_exactly_where_brute_force_finds_an_adversarial_configuration():
    outcomes = []
    for seed in range(24):
        model, x = tiny_model(seed), tiny_image(seed)
        y = model(x).argmax(1)
        wrong = brute_force(model, x, int(y))
        torch.manual_seed(seed)
        adv = LevelSpace().craft(model, x, y, EPS)
        fooled = bool(model(adv).argmax(1) != y)
        assert fooled == bool(wrong), seed
        assert (adv - x).abs().max() <= EPS
        if fooled:
            levels = levels_of(adv, model.quantizer.thresholds).flatten()
            assert tuple(levels[list(FLIPPABLE)].tolist()) in wrong
            # Pixels out of reach keep their level.
            clean = levels_of(x, model.quantizer.thresholds).flatten()
            rest = [i for i in range(16) if i not in FLIPPABLE]
            assert torch.equal(levels[rest], clean[rest])
        outcomes.append(fooled)
    # Both kinds of instance occur, so the comparison above means something.
    assert 3 <= sum(outcomes) <= len(outcomes) - 3, outcomes


def test_the_attack_finds_the_one_adversarial_configuration():
    """A model fooled by exactly one of the 64 configurations, four flips from clean."""
    x = tiny_image(7)
    clean = levels_of(x, torch.tensor([0.5])).flatten()
    target = clean.clone()
    target[list(FLIPPABLE[:4])] = 1 - target[list(FLIPPABLE[:4])]
    weights = torch.zeros(16)
    sign = 2 * target[list(FLIPPABLE)].float() - 1  # +1 where the target level is 1
    weights[list(FLIPPABLE)] = sign
    ones = int(target[list(FLIPPABLE)].sum())
    linear = nn.Linear(16, 2)
    with torch.no_grad():
        # Class 1 wins only when all six flippable levels equal the target's.
        linear.weight.copy_(torch.stack([torch.zeros(16), weights]))
        linear.bias.copy_(torch.tensor([0.0, 0.5 - ones]))
    model = QuantizedClassifier(nn.Sequential(nn.Flatten(), linear), ConstantQuantizer(2))
    model.eval().requires_grad_(False)
    y = torch.tensor([0])
    assert brute_force(model, x, 0) == {tuple(target[list(FLIPPABLE)].tolist())}

    torch.manual_seed(0)
    adv = LevelSpace(restarts=1, steps=5).craft(model, x, y, EPS)
    assert torch.equal(levels_of(adv, torch.tensor([0.5])).flatten(), target)
    assert (adv - x).abs().max() <= EPS


@pytest.mark.parametrize("grid", [False, True])
def test_realized_inputs_stay_in_budget_and_reproduce_the_levels(grid):
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (8, 1, 6, 6), generator=g).float() / 255
    thresholds = torch.tensor([0.3, 0.5, 0.7])  # 4 levels
    for eps in (0.05, 0.1, 0.2):
        box = level_box(x, eps, thresholds, grid)
        levels = box.low + (torch.rand(x.shape, generator=g) * (box.high - box.low + 1)).long()
        levels = torch.minimum(levels, box.high)
        adv = realize(box, levels)
        assert torch.equal(levels_of(adv, thresholds), levels)
        assert (adv >= 0).all() and (adv <= 1).all()
        if grid:  # whole steps; k/255 - j/255 in float32 may exceed eps by rounding
            assert on_grid(adv).all()
            steps = torch.round(adv * 255) - torch.round(x * 255)
            assert steps.abs().max() <= grid_steps(eps)
            assert (adv - x).abs().max() <= eps + 1e-6
        else:
            assert (adv - x).abs().max() <= eps


def test_a_level_out_of_reach_is_never_counted():
    model = tiny_model(1)
    x = tiny_image(1)
    y = model(x).argmax(1)
    box = level_box(x, EPS, model.quantizer.thresholds, grid=False)
    levels = 1 - box.clean_levels()  # every pixel flipped, far ones included
    adv = realize(box, levels)
    assert not verified(model, box, adv, levels, y).any()
    assert (adv - x).abs().max() <= EPS


def test_the_8bit_grid_allows_only_whole_intensity_steps():
    eps = 0.105  # 26.8 steps of 1/255: 26 whole ones
    x = torch.tensor([101.0, 102.0, 154.0, 153.0]).view(1, 1, 2, 2) / 255
    thresholds = torch.tensor([0.5])
    continuous = level_box(x, eps, thresholds, grid=False)
    grid = level_box(x, eps, thresholds, grid=True)
    # 101/255 + 0.105 crosses 0.5 but 101 + 26 = 127 steps does not; 102 + 26 = 128 does.
    assert continuous.high.flatten().tolist() == [1, 1, 1, 1]
    assert grid.high.flatten().tolist() == [0, 1, 1, 1]
    # 154 - 26 = 128 stays above the threshold; 153/255 - 0.105 = 0.495 does not.
    assert continuous.low.flatten().tolist() == [0, 0, 0, 0]
    assert grid.low.flatten().tolist() == [0, 0, 1, 0]


def test_level_attacks_run_under_bpda_on_defended_models_only(masked, undefended, eval_set):
    request = SuiteRequest(
        attacks=("pgd", "level", "level_8bit"),
        threat_models=("naive", "bpda"),
        epsilons=(0.1,),
        samples=24,
        batch_size=12,
        attack_params={
            "pgd": {"nb_iter": 10, "step_ratio": 0.25},
            "level": {"steps": 10, "restarts": 1, "greedy_steps": 10},
            "level_8bit": {"steps": 10, "restarts": 1, "greedy_steps": 10},
        },
        sanity_epsilon=None,
    )
    report = run_suite(masked, eval_set, request)
    rows = {(r["attack"], r["threat_model"]): r for r in report["results"]}
    expected = {("pgd", "naive"), ("pgd", "bpda"), ("level", "bpda"), ("level_8bit", "bpda")}
    assert set(rows) == expected
    level, pgd = rows["level", "bpda"], rows["pgd", "bpda"]
    assert level["perturbation"]["linf_max"] <= 0.1
    # The exact attack is at least as strong as BPDA-PGD here, less sampling slack.
    assert level["robust_accuracy"] <= pgd["robust_accuracy"] + 0.05
    assert level["robust_accuracy"] < report["clean_accuracy"]
    assert [w["attack"] for w in report["worst_case_8bit"]] == ["level_8bit"]

    skipped = run_suite(undefended, eval_set, request)["skipped"]
    reasons = {s["attack"]: s["reason"] for s in skipped if s["attack"].startswith("level")}
    assert set(reasons) == {"level", "level_8bit"}
    assert all("no quantizer" in reason for reason in reasons.values())


def test_level_8bit_images_are_8bit_images(masked, eval_set_8bit):
    x, y = eval_set_8bit.images[:6], eval_set_8bit.labels[:6]
    torch.manual_seed(0)
    adv = LevelSpace8Bit(steps=10, restarts=1, greedy_steps=10).craft(masked.model, x, y, 0.3)
    assert on_grid(adv).all()
    assert (torch.round(adv * 255) - torch.round(x * 255)).abs().max() <= grid_steps(0.3)
    assert not torch.equal(adv, x)  # something was crafted
