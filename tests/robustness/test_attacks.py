"""Every registered attack, through the runner, on a tiny undefended model."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from robustness.attacks import ATTACKS, get_attack
from robustness.plan import plan_units
from robustness.request import SuiteRequest, with_params
from robustness.runner import run_suite
from robustness.threats import BPDAClassifier, ZeroGradientBridge, frozen_copy

# Small budgets so the whole table runs in seconds; the defaults are for real runs.
TINY_PARAMS = {
    "pgd": {"nb_iter": 10, "step_ratio": 0.25},
    "pgd_l2": {"nb_iter": 10, "step_ratio": 0.25},
    "cw_l2": {"binary_search_steps": 2, "max_iterations": 30},
    "spsa": {"nb_iter": 20, "spsa_samples": 32},
    "hsj": {"num_iterations": 5, "initial_num_evals": 20, "max_num_evals": 100},
    "apgd_ce": {"steps": 10},
    "apgd_ce_l2": {"steps": 10},
    "apgd_t": {"steps": 10, "target_classes": 2},
    "apgd_t_l2": {"steps": 10, "target_classes": 2},
    "fab_t": {"steps": 10, "target_classes": 2},
    "fab_t_l2": {"steps": 10, "target_classes": 2},
    "square": {"queries": 300},
    "square_l2": {"queries": 300},
    "level": {"steps": 10, "restarts": 1, "greedy_steps": 10},
    "level_8bit": {"steps": 10, "restarts": 1, "greedy_steps": 10},
}
# Uniform noise is the floor: at 0.3 it barely dents even an undefended model, so it is
# tested at the largest radius and only asked to lower accuracy at all; real attacks must
# take at least 30 points.
LINF_EPS = {"noise": 1.0}
L2_EPS = 3.0
REQUIRED_DROP = {"noise": 0.05}


def tiny_request(name: str, samples: int = 24) -> SuiteRequest:
    return SuiteRequest(
        attacks=(name,),
        threat_models=("naive", "bpda", "gradient_free"),
        epsilons=(LINF_EPS.get(name, 0.3),),
        l2_epsilons=(L2_EPS,),
        samples=samples,
        batch_size=12,
        attack_params={name: TINY_PARAMS[name]} if name in TINY_PARAMS else {},
        sanity_epsilon=None,
    )


def _subject(attack, undefended, masked):
    # Level-space attacks need a quantizer: they attack the CQ model, whose synthetic
    # pixels all lie within 0.3 of its threshold, as gradient attacks do through BPDA.
    return masked if attack.access == "model" else undefended


@pytest.mark.parametrize("name", list(ATTACKS))
def test_every_attack_lowers_accuracy_on_an_undefended_model(
    name, undefended, masked, eval_set, eval_set_8bit
):
    attack = ATTACKS[name]
    # The 8-bit level attack only moves pixels of 8-bit images.
    images = eval_set_8bit if getattr(attack, "grid", False) else eval_set
    report = run_suite(_subject(attack, undefended, masked), images, tiny_request(name))

    assert report["status"] == "complete"
    assert report["clean_accuracy"] > 0.9
    # Bounded attacks are judged at their radius; minimal ones by their raw examples.
    row = next(r for r in report["results"] if r["attack"] == name and r["norm"] == attack.norm)
    drop = REQUIRED_DROP.get(name, 0.3)
    assert row["robust_accuracy"] <= report["clean_accuracy"] - drop, row
    assert row["attack_success_rate"] >= drop
    if not attack.minimal:
        bound = row["perturbation"]["linf_max" if attack.norm == "linf" else "l2_max"]
        assert bound <= row["epsilon"] + 1e-5


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_output_is_an_image_batch_in_range(name, undefended, masked, eval_set):
    attack = with_params(get_attack(name), TINY_PARAMS.get(name, {}))
    x, y = eval_set.images[:4], eval_set.labels[:4]
    eps = None if attack.minimal else 0.2
    with torch.enable_grad():
        adv = attack.craft(_subject(attack, undefended, masked).model, x, y, eps)
    assert adv.shape == x.shape
    assert torch.isfinite(adv).all()
    assert adv.min() >= -1e-6 and adv.max() <= 1 + 1e-6


def test_attacks_are_frozen_parameter_records():
    for attack in ATTACKS.values():
        assert dataclasses.is_dataclass(attack)
        assert attack.norm in ("linf", "l2")
        assert attack.access in ("gradients", "queries", "none", "model")
        with pytest.raises(dataclasses.FrozenInstanceError):
            attack.__setattr__("x", 1)


def test_every_attack_module_names_its_paper_norm_and_range():
    for attack in ATTACKS.values():
        module_doc = __import__(type(attack).__module__, fromlist=["_"]).__doc__
        assert "Norm:" in module_doc and "[0, 1]" in module_doc, type(attack).__module__


def test_unknown_attack_lists_the_valid_names():
    with pytest.raises(ValueError, match="valid attacks: noise, fgsm"):
        get_attack("deepfool")


def test_apgd_and_square_reach_through_the_quantizer(masked, eval_set):
    """Through BPDA (APGD) and by queries alone (Square) on the masked model, whose
        synthetic pixels all lie within 0.3 of its threshold. Naive APGD sees a zero gradient and
    keeps only what its random start happens to flip."""
    request = SuiteRequest(
        attacks=("apgd_ce", "square"),
        threat_models=("naive", "bpda", "gradient_free"),
        epsilons=(0.3,),
        samples=24,
        batch_size=12,
        attack_params={"apgd_ce": TINY_PARAMS["apgd_ce"], "square": TINY_PARAMS["square"]},
        sanity_epsilon=None,
    )
    report = run_suite(masked, eval_set, request)
    rows = {(r["attack"], r["threat_model"]): r["robust_accuracy"] for r in report["results"]}
    clean = report["clean_accuracy"]
    assert rows["apgd_ce", "bpda"] <= clean - 0.3, rows
    assert rows["apgd_ce", "naive"] >= rows["apgd_ce", "bpda"] + 0.5, rows
    assert rows["square", "gradient_free"] < clean, rows


@pytest.mark.parametrize("name", ["apgd_ce", "apgd_t", "fab_t", "square"])
def test_torchattacks_attacks_leave_the_deployed_model_in_eval_mode(name, masked_model, eval_set):
    """torchattacks calls ``train()`` on a model it found training; through a wrapper that
    would switch the deployed model (a TQ model: to its soft staircase) for every later
    judgement. Wrappers take their model's mode, and every submodule keeps its own."""
    model = frozen_copy(masked_model)
    attack = with_params(get_attack(name), TINY_PARAMS[name])
    surface = model if attack.access == "queries" else BPDAClassifier(model)
    assert not surface.training and not ZeroGradientBridge(model).training
    surface.train()  # even a surface left training must not leak its mode into the model
    model.eval()
    x, y = eval_set.images[:4], eval_set.labels[:4]
    attack.craft(surface, x, y, 0.2)
    assert not any(m.training for m in model.modules())


def test_fab_t_reaches_through_the_quantizer_with_bpda_and_not_without(masked, eval_set):
    """FAB steps to the linearised boundary of each target class: through BPDA it finds
    examples on the masked model; with the staircase's true (zero) gradient it has no
    boundary to step to, and every image comes back clean (never non-finite)."""
    request = SuiteRequest(
        attacks=("fab_t",),
        threat_models=("naive", "bpda"),
        epsilons=(0.3,),
        samples=12,
        batch_size=12,
        attack_params={"fab_t": {"steps": 20, "target_classes": 3}},
        sanity_epsilon=None,
    )
    report = run_suite(masked, eval_set, request)
    rows = {r["threat_model"]: r for r in report["results"]}
    clean = report["clean_accuracy"]
    assert rows["bpda"]["robust_accuracy"] <= clean - 0.3, rows
    assert rows["naive"]["robust_accuracy"] == clean
    assert rows["naive"]["perturbation"]["linf_max"] == 0.0


class _Linear(torch.nn.Module):
    """A fixed linear model of 1x4x4 images with ``classes`` outputs."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(16, classes)
        torch.nn.init.normal_(self.linear.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


@pytest.mark.parametrize(
    ("name", "classes"), [("apgd_t", 5), ("apgd_t_l2", 5), ("fab_t", 3), ("fab_t_l2", 3)]
)
def test_targeted_attacks_take_every_runner_up_of_a_model_with_fewer_classes(name, classes) -> None:
    """The standard preset asks for 9 target classes; a model with fewer classes has fewer
    runner-ups, and both targeted attacks try those (and move images); 0 targets is refused."""
    model = _Linear(classes).eval()
    torch.manual_seed(1)
    x = torch.rand(8, 1, 4, 4)
    y = model(x).argmax(1)
    eps = 0.5 if name.endswith("_l2") else 0.3
    adv = with_params(get_attack(name), {"steps": 10, "target_classes": 9}).craft(model, x, y, eps)
    assert adv.shape == x.shape and torch.isfinite(adv).all()
    assert (model(adv).argmax(1) != y).any()
    with pytest.raises(ValueError, match="target_classes must be >= 1"):
        with_params(get_attack(name), {"target_classes": 0}).craft(model, x, y, eps)


def test_apgd_t_says_why_it_cannot_attack_a_model_of_three_classes() -> None:
    model = _Linear(3).eval()
    x = torch.rand(4, 1, 4, 4)
    with pytest.raises(ValueError, match="at least 4 classes; the model has 3"):
        get_attack("apgd_t").craft(model, x, model(x).argmax(1), 0.3)


def test_the_plan_skips_apgd_t_on_a_model_of_three_classes_saying_why(undefended) -> None:
    three = dataclasses.replace(undefended, classes=3, input_shape=(1, 28, 28))
    request = SuiteRequest(attacks=("apgd_t", "fab_t"), threat_models=("naive",), epsilons=(0.3,))
    units, skipped = plan_units(request, {n: get_attack(n) for n in request.attacks}, three, None)
    assert [unit.attack for unit in units if not unit.sanity] == ["fab_t"]
    assert skipped == [
        {
            "attack": "apgd_t",
            "threat_model": "naive",
            "reason": "it needs at least 4 classes; the model has 3",
        }
    ]
