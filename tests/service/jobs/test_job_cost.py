"""The admin API bounds the total work of a robustness check and of its queue."""

from __future__ import annotations

import json

from robustness.attacks import ATTACKS, get_attack
from robustness.request import SuiteRequest
from service.jobs.cost import estimate_cost, evaluations_per_sample
from tests.service.helpers.admin import AUTH, FAST, slow, tiny_npz


def test_evaluations_per_sample_follow_the_iteration_parameters() -> None:
    assert evaluations_per_sample(get_attack("fgsm")) == 1
    assert evaluations_per_sample(get_attack("pgd")) == 40  # nb_iter x restarts
    request = SuiteRequest(attacks=("pgd",), attack_params={"pgd": {"nb_iter": 7, "restarts": 3}})
    assert evaluations_per_sample(request.resolved_attacks()["pgd"]) == 21
    assert evaluations_per_sample(get_attack("apgd_t")) == 50 * 3 * 1  # steps x targets x restarts
    assert evaluations_per_sample(get_attack("square")) == 1000  # queries x restarts
    # The level-space attack states its own: PGD runs, then greedy moves among candidates.
    assert evaluations_per_sample(get_attack("level")) == 50 * 3 + 40 * 16


def test_every_attack_has_a_cost_above_one_evaluation_unless_it_is_single_step() -> None:
    single_step = {"noise", "fgsm"}
    for name in ATTACKS:
        cost = evaluations_per_sample(get_attack(name))
        assert (cost == 1) == (name in single_step), (name, cost)


def test_the_cost_counts_units_samples_and_iterations() -> None:
    request = SuiteRequest(
        attacks=("fgsm", "pgd"),
        threat_models=("naive", "bpda"),
        epsilons=(0.1, 0.3),
        samples=10,
        sanity_epsilon=None,
    )
    # (1 + 40) evaluations x 2 threat models x 2 radii x 10 samples
    assert estimate_cost(request) == 41 * 2 * 2 * 10
    with_sanity = SuiteRequest(**{**request.__dict__, "sanity_epsilon": 1.0, "sanity_samples": 5})
    assert estimate_cost(with_sanity) == 41 * 2 * 2 * 10 + 2 * 5 * 10  # BIM, 10 steps


def test_a_check_within_every_field_limit_but_too_costly_is_refused(queue_only_admin) -> None:
    client = queue_only_admin(robustness_max_epsilons=16, robustness_max_samples=1000)
    everything = {
        "attacks": list(ATTACKS),
        "threat_models": ["transfer", "naive", "bpda", "gradient_free"],
        "epsilons": [i / 16 for i in range(1, 17)],
        "l2_epsilons": [float(i) for i in range(1, 17)],
        "samples": 1000,
    }
    huge_nb_iter = {**FAST, "attacks": ["pgd"], "attack_params": {"pgd": {"nb_iter": 10**9}}}
    for body in (everything, huge_nb_iter):
        response = client.post("/robustness-check", headers=AUTH, json=body)
        assert response.status_code == 422
        assert response.json()["reason"] == "invalid_job_request"
        assert "QUSEC_ROBUSTNESS_MAX_COST" in response.json()["error"]
    assert client.get("/robustness-check", headers=AUTH).json() == {"jobs": []}


def test_the_queue_is_bounded_by_its_total_cost(queue_only_admin) -> None:
    first_cost = 60 * 100  # slow(): PGD, 100 steps, transfer only, one radius, 60 samples
    # FAST alone costs more than 100 (fgsm under three threat models, noise, 20 samples).
    client = queue_only_admin(robustness_max_queued_cost=first_cost + 100)
    upload = {"samples": ("set.npz", tiny_npz(count=60), "application/octet-stream")}
    first = client.post(
        "/robustness-check",
        headers=AUTH,
        data={"request": json.dumps(slow(samples=60))},
        files=upload,
    )
    assert first.status_code == 202 and first.json()["estimated_cost"] == first_cost
    refused = client.post("/robustness-check", headers=AUTH, json=FAST)
    assert refused.status_code == 429 and refused.json()["reason"] == "job_queue_full"
    assert "QUSEC_ROBUSTNESS_MAX_QUEUED_COST" in refused.json()["error"]
    assert client.delete(f"/robustness-check/{first.json()['id']}", headers=AUTH).status_code in (
        200,
        202,
    )
