"""Gradient-masking flags: fire on a masked model, stay quiet on an undefended one."""

from __future__ import annotations

import pytest

from robustness.flags import masking_flags
from robustness.report import fired_flags
from robustness.request import SuiteRequest
from robustness.runner import run_suite

REQUEST = SuiteRequest(
    attacks=("fgsm", "pgd", "hsj"),
    epsilons=(0.1, 0.3),
    l2_epsilons=(),
    samples=24,
    batch_size=12,
    attack_params={
        "pgd": {"nb_iter": 10, "step_ratio": 0.25},
        "hsj": {"num_iterations": 8, "initial_num_evals": 20, "max_num_evals": 100},
    },
    sanity_epsilon=1.0,
    sanity_samples=24,
)


@pytest.fixture(scope="module")
def masked_report(masked, undefended, eval_set):
    return run_suite(masked, eval_set, REQUEST, surrogate=undefended)


@pytest.fixture(scope="module")
def undefended_report(undefended, eval_set):
    return run_suite(undefended, eval_set, REQUEST, surrogate=undefended)


def test_flags_fire_on_a_masked_model(masked_report):
    fired = set(fired_flags(masked_report))
    assert fired == {
        "zero_or_missing_gradients",
        "naive_far_above_bpda",
        "gradient_free_beats_gradient",
        "accuracy_not_near_zero_at_large_epsilon",
        "accuracy_not_falling_with_epsilon",
    }, masked_report["masking_flags"]


def test_flags_stay_quiet_on_an_undefended_model(undefended_report):
    assert fired_flags(undefended_report) == [], undefended_report["masking_flags"]
    checked = {f["name"]: f["fired"] for f in undefended_report["masking_flags"]}
    # No quantizer, so there is no BPDA to compare with: not checked rather than clear.
    assert checked["naive_far_above_bpda"] is None
    assert checked["zero_or_missing_gradients"] is False


def test_masked_model_headline_is_the_adaptive_attack_not_the_naive_one(masked_report):
    at_03 = next(w for w in masked_report["worst_case"] if w["epsilon"] == 0.3)
    naive = [
        r
        for r in masked_report["results"]
        if r["threat_model"] == "naive" and r["epsilon"] == 0.3 and not r["sanity"]
    ]
    assert at_03["threat_model"] != "naive"
    assert at_03["robust_accuracy"] < min(r["robust_accuracy"] for r in naive) - 0.5


def _row(attack, threat, eps, accuracy, clean=1.0, sanity=False, norm="linf"):
    return {
        "attack": attack,
        "threat_model": threat,
        "norm": norm,
        "epsilon": eps,
        "robust_accuracy": accuracy,
        "clean_accuracy": clean,
        "sanity": sanity,
    }


OK_PROBES = {"naive": {"status": "ok", "zero_fraction": 0.0, "mean_abs": 1e-3}}


def _fired(rows, probes=OK_PROBES):
    return {f["name"]: f["fired"] for f in masking_flags(rows, probes)}


def test_naive_far_above_bpda_needs_more_than_the_margin():
    close = [_row("pgd", "naive", 0.3, 0.50), _row("pgd", "bpda", 0.3, 0.45)]
    far = [_row("pgd", "naive", 0.3, 0.90), _row("pgd", "bpda", 0.3, 0.10)]
    assert _fired(close)["naive_far_above_bpda"] is False
    assert _fired(far)["naive_far_above_bpda"] is True
    assert _fired(far[:1])["naive_far_above_bpda"] is None


def test_gradient_free_beating_white_box_fires_but_noise_does_not_count():
    rows = [_row("pgd", "naive", 0.3, 0.80), _row("spsa", "gradient_free", 0.3, 0.20)]
    assert _fired(rows)["gradient_free_beats_gradient"] is True
    rows[1] = _row("noise", "gradient_free", 0.3, 0.20)
    assert _fired(rows)["gradient_free_beats_gradient"] is None


def test_accuracy_rising_with_epsilon_fires():
    rows = [_row("pgd", "bpda", 0.1, 0.30, clean=0.99), _row("pgd", "bpda", 0.3, 0.60, clean=0.99)]
    assert _fired(rows)["accuracy_not_falling_with_epsilon"] is True
    rows[1]["robust_accuracy"] = 0.05
    assert _fired(rows)["accuracy_not_falling_with_epsilon"] is False


def test_transfer_that_fails_everywhere_is_not_a_masking_symptom():
    rows = [
        _row("pgd", "transfer", 0.1, 0.99, clean=0.99),
        _row("pgd", "transfer", 0.3, 0.99, clean=0.99),
    ]
    assert _fired(rows)["accuracy_not_falling_with_epsilon"] is False


def test_sanity_radius_accuracy_must_be_near_zero():
    rows = [
        _row("bim", "bpda", 1.0, 0.02, sanity=True),
        _row("bim", "naive", 1.0, 0.4, sanity=True),
    ]
    flag = next(
        f
        for f in masking_flags(rows, OK_PROBES)
        if f["name"] == "accuracy_not_near_zero_at_large_epsilon"
    )
    assert flag["fired"] is True
    assert flag["evidence"] == ["bim naive eps=1: 40.0%"]


def test_missing_gradient_probe_fires():
    probes = {"naive": {"status": "none", "zero_fraction": 1.0, "mean_abs": 0.0}}
    assert _fired([], probes)["zero_or_missing_gradients"] is True
    assert _fired([])["zero_or_missing_gradients"] is False


def test_stronger_attacks_beating_bpda_pgd_fire_beyond_a_few_points():
    rows = [_row("pgd", "bpda", 0.3, 0.80), _row("level", "bpda", 0.3, 0.78)]
    assert _fired(rows)["stronger_attack_beats_bpda_pgd"] is False
    rows[1] = _row("apgd_t", "bpda", 0.3, 0.70)
    flag = next(f for f in masking_flags(rows, OK_PROBES) if f["name"].startswith("stronger"))
    assert flag["fired"] is True
    assert flag["evidence"] == ["linf eps=0.3: apgd_t 70.0% vs BPDA pgd 80.0%"]
    # L2 rows compare with PGD-L2, and without BPDA-PGD rows nothing is checked.
    l2 = [_row("pgd_l2", "bpda", 2, 0.5, norm="l2"), _row("apgd_ce_l2", "bpda", 2, 0.3, norm="l2")]
    assert _fired(l2)["stronger_attack_beats_bpda_pgd"] is True
    assert _fired(rows[1:])["stronger_attack_beats_bpda_pgd"] is None
