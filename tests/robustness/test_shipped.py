"""The suite on the shipped MNIST checkpoints: the masking the issue warns about is there."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.checkpoint import load_checkpoint
from models.evalset import eval_set_path, load_eval_set
from robustness.report import fired_flags
from robustness.request import SuiteRequest
from robustness.runner import Subject, run_suite

REPO = Path(__file__).resolve().parents[2]
REQUEST = SuiteRequest(
    attacks=("fgsm", "pgd"),
    threat_models=("transfer", "naive", "bpda"),
    epsilons=(0.3,),
    samples=100,
    batch_size=100,
    attack_params={"pgd": {"nb_iter": 20, "step_ratio": 0.125}},
    sanity_epsilon=1.0,
    sanity_samples=50,
)


def subject(name: str) -> Subject:
    return Subject.from_checkpoint(load_checkpoint(REPO / "checkpoints" / name))


@pytest.fixture(scope="module")
def mnist():
    return load_eval_set(eval_set_path("mnist", REPO / "data" / "eval"))


def _row(report, attack, threat):
    return next(
        r
        for r in report["results"]
        if r["attack"] == attack and r["threat_model"] == threat and not r["sanity"]
    )


@pytest.mark.slow
def test_undefended_mnist_model_falls_and_raises_no_flag(mnist):
    report = run_suite(subject("mnist-undefended"), mnist, REQUEST)
    assert report["clean_accuracy"] > 0.97
    assert _row(report, "pgd", "naive")["robust_accuracy"] <= 0.05
    assert fired_flags(report) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mnist-cq2", "mnist-tq2"])
def test_defended_mnist_models_mask_gradients_and_bpda_sees_through(name, mnist):
    report = run_suite(subject(name), mnist, REQUEST, surrogate=subject("mnist-undefended"))
    assert report["gradient_probes"]["naive"]["status"] == "none"
    assert report["gradient_probes"]["bpda"]["status"] == "ok"
    naive_fgsm = _row(report, "fgsm", "naive")
    assert naive_fgsm["robust_accuracy"] == report["clean_accuracy"], "FGSM moves nothing"
    assert _row(report, "pgd", "bpda")["robust_accuracy"] < naive_fgsm["robust_accuracy"]
    fired = set(fired_flags(report))
    assert {"zero_or_missing_gradients", "accuracy_not_near_zero_at_large_epsilon"} <= fired
