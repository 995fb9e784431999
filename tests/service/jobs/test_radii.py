"""Radii as the request wrote them, beside the numbers in every answer that shows one."""

from __future__ import annotations

from service.jobs.radii import add_labels, label_table


def test_every_shown_radius_gets_the_label_the_request_wrote() -> None:
    request = {"epsilons": [2 / 255, 0.05], "l2_epsilons": [0.5], "sanity_epsilon": 1.0}
    given = {"epsilons": ["2/255", 0.05], "sanity_epsilon": "255/255"}
    table = label_table(request, given)
    report = {
        "results": [
            {"norm": "linf", "epsilon": 2 / 255, "robust_accuracy": 0.5},
            {"norm": "linf", "epsilon": 1.0, "sanity": True},
            {"norm": "l2", "epsilon": 0.5},
            {"norm": "l2", "epsilon": None},  # unbounded rows keep no label
        ],
        "worst_case": [{"norm": "linf", "epsilon": 0.05}],
        "examples": {"groups": [{"epsilon": 8 / 255, "images": {"epsilon": 3}}]},
    }
    add_labels(report, table)
    labels = [row.get("epsilon_label") for row in report["results"]]
    # The request's own words; the L2 radius it left to the defaults, as the tables write it.
    assert labels == ["2/255", "255/255", "0.5", None]
    assert report["worst_case"][0]["epsilon_label"] == "0.05"
    group = report["examples"]["groups"][0]
    assert group["epsilon_label"] == "8/255" and "epsilon_label" not in group["images"]
