"""Report files: JSON record, Markdown, PNG; and the headline's definition."""

from __future__ import annotations

import json

import pytest

from robustness.render import format_eps, to_markdown, write_report
from robustness.report import derived_from_rows, worst_case
from robustness.request import SuiteRequest
from robustness.runner import run_suite
from robustness.summary import write_summary

REQUEST = SuiteRequest(
    attacks=("noise", "fgsm", "cw_l2"),
    epsilons=(0.1, 0.3),
    l2_epsilons=(2.0,),
    samples=16,
    batch_size=16,
    attack_params={"cw_l2": {"binary_search_steps": 1, "max_iterations": 10}},
    sanity_epsilon=1.0,
    sanity_samples=8,
)


@pytest.fixture(scope="module")
def report(masked, undefended, eval_set):
    return run_suite(masked, eval_set, REQUEST, surrogate=undefended)


def test_report_records_what_is_needed_to_reproduce_it(report):
    assert report["model"]["sha256"] == "sha-cq2"
    assert report["model"]["quantizer"]["kind"] == "cq"
    assert report["surrogate"]["sha256"] == "sha-undefended"
    assert report["eval_set"] == {
        "name": "synthetic-digits",
        "sha256": "synthetic",
        "available": 64,
    }
    assert report["samples"] == 16 and report["seed"] == 0
    assert set(report["versions"]) >= {"python", "torch", "cleverhans", "numpy"}
    assert report["attack_params"]["cw_l2"]["max_iterations"] == 10
    assert json.loads(json.dumps(report)) == report


def test_worst_case_is_the_minimum_over_attacks_and_threat_models(report):
    for entry in report["worst_case"]:
        candidates = [
            r["robust_accuracy"]
            for r in report["results"]
            if r["norm"] == entry["norm"] and r["epsilon"] == entry["epsilon"] and not r["sanity"]
        ]
        assert entry["robust_accuracy"] == min(candidates)
    assert [(w["norm"], w["epsilon"]) for w in report["worst_case"]] == [
        ("linf", 0.1),
        ("linf", 0.3),
        ("l2", 2.0),
    ]


def test_worst_case_per_attack_takes_the_minimum_over_threat_models():
    rows = [
        {
            "attack": "fgsm",
            "threat_model": t,
            "norm": "linf",
            "epsilon": 0.3,
            "sanity": False,
            "robust_accuracy": acc,
            "samples": 10,
            "complete": True,
        }
        for t, acc in (("transfer", 0.9), ("bpda", 0.2), ("naive", 0.95))
    ]
    (entry,) = worst_case(rows, per_attack=True)
    assert (entry["attack"], entry["threat_model"], entry["robust_accuracy"]) == (
        "fgsm",
        "bpda",
        0.2,
    )


def test_the_8bit_headline_takes_only_attacks_that_send_8bit_images():
    def row(attack, accuracy):
        return {
            "attack": attack,
            "threat_model": "bpda",
            "norm": "linf",
            "epsilon": 0.3,
            "sanity": False,
            "robust_accuracy": accuracy,
            "clean_accuracy": 0.9,
            "samples": 10,
            "complete": True,
        }

    derived = derived_from_rows(
        [row("pgd", 0.5), row("level", 0.3), row("level_8bit", 0.4)], {"naive": _PROBE}
    )
    assert [(w["attack"], w["robust_accuracy"]) for w in derived["worst_case"]] == [("level", 0.3)]
    assert [(w["attack"], w["robust_accuracy"]) for w in derived["worst_case_8bit"]] == [
        ("level_8bit", 0.4)
    ]


_PROBE = {"status": "ok", "zero_fraction": 0.0, "mean_abs": 1e-3}


def test_files_are_written_and_markdown_leads_with_the_worst_case(report, tmp_path):
    paths = write_report(report, tmp_path, "tiny")
    assert [p.name for p in paths] == ["tiny.json", "tiny.md", "tiny.png"]
    assert json.loads(paths[0].read_text())["status"] == "complete"
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = paths[1].read_text()
    assert text.index("worst-case robust accuracy") < text.index("## Results")
    assert "**FIRED** `zero_or_missing_gradients`" in text


def test_stopped_report_says_so_in_markdown(report):
    assert "Status: stopped" in to_markdown({**report, "status": "stopped"})


def test_summary_puts_every_model_in_one_table(report, tmp_path):
    md, png = write_summary([report, report], tmp_path, "synthetic")
    text = md.read_text()
    assert text.count("| tiny-cq2 | 100.0%") + text.count("| tiny-cq2 |") >= 2
    assert "transfer" in text and png.stat().st_size > 0


@pytest.mark.parametrize(
    ("eps", "text"),
    [
        (0.3, "0.3"),
        (0.25, "0.25"),
        (1.0, "1"),
        (2 / 255, "2/255"),
        (8 / 255, "8/255"),
        (32 / 255, "32/255"),  # a fraction of 255 above 0.1 too
        (0.0313725, "0.0313725"),  # typed as a decimal, near 8/255: kept as typed
        (None, "unbounded"),
    ],
)
def test_radii_print_as_people_write_them(eps, text):
    assert format_eps(eps) == text


def test_markdown_and_summary_show_the_8bit_headline(report, tmp_path):
    with_grid = {
        **report,
        "worst_case_8bit": [
            {**report["worst_case"][0], "attack": "level_8bit", "threat_model": "bpda"}
        ],
    }
    assert "On the 8-bit grid" in to_markdown(with_grid)
    assert "On the 8-bit grid" not in to_markdown({**report, "worst_case_8bit": []})
    md, _ = write_summary([with_grid], tmp_path, "synthetic")
    assert "level_8bit/bpda" in md.read_text()
