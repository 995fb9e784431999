"""The runner's contract with its callers: progress, stopping, validation, invariants."""

from __future__ import annotations

import json

import pytest
import torch

from models.evalset import EvalSet
from robustness.request import SuiteRequest
from robustness.runner import budget, plan_units, run_suite

CHEAP = SuiteRequest(
    attacks=("fgsm", "bim"),
    threat_models=("transfer", "naive", "bpda"),
    epsilons=(0.1, 0.3),
    samples=32,
    batch_size=8,
    sanity_epsilon=None,
)


def _without_timing(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_progress_counts_every_batch_up_to_the_total(masked, undefended, eval_set):
    events = []
    report = run_suite(masked, eval_set, CHEAP, surrogate=undefended, progress=events.append)
    done = [e.done_batches for e in events]
    # 2 attacks x 3 threat models x 2 radii, 4 batches of 8 each.
    assert done == list(range(1, 49))
    assert {e.total_batches for e in events} == {48}
    assert report["status"] == "complete"
    assert len(report["results"]) == 12


def test_should_stop_returns_partial_results_with_status(masked, undefended, eval_set):
    calls = {"n": 0}

    def stop_after_seven_checks() -> bool:
        # One check before each unit and one before each batch: unit 1 takes 5 checks,
        # unit 2 gets its first batch done and stops before its second.
        calls["n"] += 1
        return calls["n"] > 7

    report = run_suite(
        masked, eval_set, CHEAP, surrogate=undefended, should_stop=stop_after_seven_checks
    )
    assert report["status"] == "stopped"
    complete = [r for r in report["results"] if r["complete"]]
    partial = [r for r in report["results"] if not r["complete"]]
    assert len(complete) == 1 and len(partial) == 1
    assert partial[0]["samples"] == 8
    not_run = [s for s in report["skipped"] if s["reason"].startswith("not run: stopped")]
    assert len(not_run) == 10
    assert report["worst_case"], "partial rows still produce a headline"


def test_budget_hook_stops_immediately_at_zero_seconds():
    assert budget(0)() is True
    assert budget(3600)() is False
    assert budget(3600, cancelled=lambda: True)() is True


def test_same_seed_same_results(masked, undefended, eval_set):
    request = SuiteRequest(
        attacks=("pgd",),
        threat_models=("bpda",),
        epsilons=(0.1,),
        samples=16,
        batch_size=8,
        attack_params={"pgd": {"nb_iter": 5}},
        sanity_epsilon=None,
    )
    first = run_suite(masked, eval_set, request)
    second = run_suite(masked, eval_set, request)
    assert _without_timing(first["results"]) == _without_timing(second["results"])


def test_transfer_examples_are_crafted_once_per_surrogate(masked, undefended, eval_set):
    request = SuiteRequest(
        attacks=("fgsm",),
        threat_models=("transfer",),
        epsilons=(0.1, 0.3),
        samples=16,
        batch_size=8,
        sanity_epsilon=None,
    )
    cache = {}
    events = []
    first = run_suite(masked, eval_set, request, surrogate=undefended, transfer_cache=cache)
    assert len(cache) == 2
    second = run_suite(
        masked,
        eval_set,
        request,
        surrogate=undefended,
        transfer_cache=cache,
        progress=events.append,
    )
    assert events == [], "cached transfer units craft nothing"
    # Reused rows keep the crafting time they cost, not the lookup's.
    assert first["results"] == second["results"]


def test_undefended_target_skips_bpda_and_self_transfer(undefended, eval_set):
    units, skipped = plan_units(CHEAP, CHEAP.resolved_attacks(), undefended, undefended)
    assert {u.threat_model for u in units} == {"naive"}
    reasons = {(s["attack"], s["threat_model"]): s["reason"] for s in skipped}
    assert "own surrogate" in reasons[("fgsm", "transfer")]
    assert "no quantizer" in reasons[("bim", "bpda")]


def test_minimal_attacks_are_judged_at_every_radius_inside_the_ball(undefended, eval_set):
    request = SuiteRequest(
        attacks=("cw_l2",),
        threat_models=("naive",),
        epsilons=(0.1, 0.3),
        l2_epsilons=(1.0,),
        samples=12,
        batch_size=12,
        sanity_epsilon=None,
        attack_params={"cw_l2": {"binary_search_steps": 2, "max_iterations": 20}},
    )
    rows = run_suite(undefended, eval_set, request)["results"]
    assert [(r["norm"], r["epsilon"]) for r in rows] == [
        ("l2", None),
        ("linf", 0.1),
        ("linf", 0.3),
        ("l2", 1.0),
    ]
    for row in rows[1:]:
        key = "linf_max" if row["norm"] == "linf" else "l2_max"
        assert row["perturbation"][key] <= row["epsilon"] + 1e-5
    assert len({r["seconds"] for r in rows}) == 1, "one crafting run serves every radius"


def test_sanity_rows_stay_out_of_the_headline(masked, eval_set):
    request = SuiteRequest(
        attacks=("fgsm",),
        threat_models=("naive", "bpda"),
        epsilons=(0.1,),
        samples=16,
        batch_size=8,
        sanity_epsilon=1.0,
        sanity_samples=8,
    )
    report = run_suite(masked, eval_set, request)
    sanity = [r for r in report["results"] if r["sanity"]]
    assert {(r["attack"], r["threat_model"], r["samples"]) for r in sanity} == {
        ("bim", "naive", 8),
        ("bim", "bpda", 8),
    }
    assert {w["epsilon"] for w in report["worst_case"]} == {0.1}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"attacks": ("deepfool",)}, "unknown attack"),
        ({"threat_models": ("grey_box",)}, "unknown threat model"),
        ({"epsilons": (-0.1,)}, "positive finite"),
        ({"epsilons": (1.5,)}, "above 1"),
        ({"epsilons": (), "l2_epsilons": ()}, "no epsilons"),
        ({"samples": 0}, "samples must be a positive integer"),
        ({"attack_params": {"pgd": {"nb_iters": 3}}}, "no parameter 'nb_iters'; valid: nb_iter"),
        ({"attack_params": {"pgd": {"nb_iter": "many"}}}, "pgd.nb_iter must be int"),
        ({"attack_params": {"spsa": {"nb_iter": 3}}}, "not requested"),
        ({"sample_limits": {"pgd": 0}}, "sample limit"),
        ({"bpda_backward": "zero"}, "bpda_backward"),
    ],
)
def test_invalid_requests_are_refused_before_anything_runs(changes, message):
    request = SuiteRequest.from_dict({**CHEAP.as_dict(), "attacks": ("pgd",), **changes})
    with pytest.raises(ValueError, match=message):
        request.validate()


def test_overrides_are_coerced_from_strings():
    request = SuiteRequest(
        attacks=("pgd", "spsa"),
        attack_params={
            "pgd": {"nb_iter": "7", "step_ratio": "0.5"},
            "spsa": {"early_stop": "false"},
        },
    )
    attacks = request.resolved_attacks()
    assert attacks["pgd"].nb_iter == 7 and attacks["pgd"].step_ratio == 0.5
    assert attacks["spsa"].early_stop is False


def test_images_outside_the_unit_range_are_refused(masked, eval_set):
    bad = EvalSet("bad", eval_set.images * 2, eval_set.labels, "x")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        run_suite(masked, bad, CHEAP)


def test_the_callers_model_is_not_touched(masked, undefended, eval_set):
    before = {k: v.clone() for k, v in masked.model.state_dict().items()}
    run_suite(masked, eval_set, CHEAP, surrogate=undefended)
    after = masked.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in masked.model.parameters())


def test_request_round_trips_through_json():
    raw = json.loads(json.dumps(CHEAP.as_dict()))
    assert SuiteRequest.from_dict(raw) == CHEAP
    with pytest.raises(ValueError, match="unknown request fields: colour"):
        SuiteRequest.from_dict({**raw, "colour": "red"})
