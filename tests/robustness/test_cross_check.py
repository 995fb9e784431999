"""Cross-check: our PGD (cleverhans under our runner) against torchattacks' independent PGD.

Both run the same Madry et al. recipe (random start, signed steps of eps/4, 10 steps); on
the same samples their robust accuracies must agree within a few points. torchattacks is
a test-only dependency.
"""

from __future__ import annotations

import pytest
import torch
import torchattacks

from robustness.request import SuiteRequest
from robustness.runner import run_suite
from robustness.threats import BPDAClassifier, frozen_copy

STEPS, STEP_RATIO = 10, 0.25
AGREEMENT = 0.08  # points of accuracy; 64 samples give steps of 1.6 points


def ours(subject, eval_set, threat: str, eps: float) -> float:
    request = SuiteRequest(
        attacks=("pgd",),
        threat_models=(threat,),
        epsilons=(eps,),
        samples=len(eval_set.labels),
        batch_size=32,
        attack_params={"pgd": {"nb_iter": STEPS, "step_ratio": STEP_RATIO}},
        sanity_epsilon=None,
    )
    (row,) = run_suite(subject, eval_set, request)["results"]
    return row["robust_accuracy"]


def theirs(attack_model, judge_model, eval_set, eps: float) -> float:
    torch.manual_seed(1)
    attack = torchattacks.PGD(
        attack_model, eps=eps, alpha=STEP_RATIO * eps, steps=STEPS, random_start=True
    )
    adv = attack(eval_set.images, eval_set.labels)
    with torch.no_grad():
        return float((judge_model(adv).argmax(1) == eval_set.labels).float().mean())


@pytest.mark.parametrize("eps", [0.06, 0.08])
def test_pgd_agrees_with_torchattacks_on_an_undefended_model(undefended, eval_set, eps):
    model = frozen_copy(undefended.model)
    mine, reference = ours(undefended, eval_set, "naive", eps), theirs(model, model, eval_set, eps)
    assert 0.1 < reference < 0.95, "the radius should leave something to disagree about"
    assert abs(mine - reference) <= AGREEMENT, (mine, reference)


def test_pgd_with_bpda_agrees_with_torchattacks_through_the_same_surrogate(masked, eval_set):
    model = frozen_copy(masked.model)
    # Synthetic pixels sit at least 0.05 from the threshold: 0.1 flips some, not all.
    eps = 0.1
    mine = ours(masked, eval_set, "bpda", eps)
    reference = theirs(BPDAClassifier(model), model, eval_set, eps)
    assert 0.1 < reference < 0.95
    assert abs(mine - reference) <= AGREEMENT, (mine, reference)
