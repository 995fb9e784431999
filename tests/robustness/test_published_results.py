"""The published reproduction (docs/results/) belongs to the shipped checkpoints and data.

These tests read the JSON records only; they check that each report was made on the
checkpoint and evaluation set the repository ships, covers what docs/results.md says it
covers, and that its headline and flags are what today's code derives from its rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.checkpoint import sha256_file
from models.evalset import eval_set_path
from robustness.attacks import ATTACKS
from robustness.flags import masking_flags
from robustness.presets import REPRODUCTION_ATTACKS
from robustness.report import derived_from_rows, worst_case
from robustness.threats import THREAT_MODELS

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results"
CIFAR10_SUBSET = eval_set_path("cifar10")
MODELS = ("mnist-undefended", "mnist-cq2", "mnist-tq2")
CIFAR10_MODELS = ("cifar10-undefended", "cifar10-cq4", "cifar10-tq4")
# The reports of the adversarially trained models and of the ResNet-20s (docs/results.md,
# "Adversarial training" and "CIFAR-10 ResNet-20"), named by their path under docs/results.
# They ran the attack sets their tables name, so their coverage is not checked here.
LATER_REPORTS = tuple(
    sorted(
        path.relative_to(RESULTS).with_suffix("").as_posix()
        for folder in ("adversarial", "resnet")
        for path in (RESULTS / folder).glob("*.json")
    )
)
# Every attack of the reproduction preset ran on every image (docs/results.md, "Sample
# counts"), but those that search the quantizer's levels (access "model") only where
# there is a staircase, as the runner plans them.
FULL_SAMPLE_ATTACKS = set(REPRODUCTION_ATTACKS)


def _report(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())


def _weights_sha256(name: str) -> str:
    """A shipped checkpoint's, from its manifest; an unshipped sweep model's, as listed."""
    if name in CIFAR10_SWEEP_UNSHIPPED:
        return CIFAR10_SWEEP_UNSHIPPED[name]
    manifest = json.loads((ROOT / "checkpoints" / name / "manifest.json").read_text())
    return manifest["weights_sha256"]


@pytest.mark.parametrize("name", MODELS + CIFAR10_MODELS + LATER_REPORTS)
def test_report_was_made_on_the_shipped_checkpoint_and_evaluation_set(name):
    report = _report(name)
    model = Path(name).name
    dataset = model.split("-", 1)[0]
    assert report["model"]["name"] == model
    assert report["samples"] == 1000
    assert report["model"]["sha256"] == _weights_sha256(model)
    assert report["eval_set"]["sha256"] == sha256_file(eval_set_path(dataset))
    if not model.endswith("-undefended"):
        assert report["surrogate"]["sha256"] == _weights_sha256(f"{dataset}-undefended")


@pytest.mark.parametrize("name", MODELS)
def test_report_covers_every_threat_model_on_1000_images(name):
    report = _report(name)
    assert report["status"] == "complete"
    assert report["samples"] == 1000
    rows = [r for r in report["results"] if not r["sanity"]]
    expected = {"naive", "gradient_free"} if name == "mnist-undefended" else set(THREAT_MODELS)
    assert {r["threat_model"] for r in rows} == expected
    full = FULL_SAMPLE_ATTACKS
    if name == "mnist-undefended":
        full = {attack for attack in full if ATTACKS[attack].access != "model"}
    assert {r["attack"] for r in rows} >= full
    for row in rows:
        if row["attack"] in full:
            assert (row["samples"], row["complete"]) == (1000, True), row
    epsilons = {r["epsilon"] for r in rows if r["norm"] == "linf"}
    assert {0.1, 0.2, 0.3} <= epsilons


@pytest.mark.parametrize("name", MODELS + CIFAR10_MODELS + LATER_REPORTS)
def test_headline_and_flags_follow_from_the_rows(name):
    report = _report(name)
    rows = report["results"]
    derived = derived_from_rows(rows, report["gradient_probes"])
    assert report["worst_case"] == worst_case(rows)
    assert report["worst_case_per_attack"] == worst_case(rows, per_attack=True)
    assert report["masking_flags"] == masking_flags(rows, report["gradient_probes"])
    assert {key: report[key] for key in derived} == derived


# The CIFAR-10 reproduction (docs/results.md, "CIFAR-10"): every attack of the reproduction
# preset, and those run on fewer than the 1,000 images, with their counts.
CIFAR10_ATTACKS = set(REPRODUCTION_ATTACKS)
CIFAR10_LIMITED: dict[str, int] = {"hsj": 200, "spsa": 100}
CIFAR10_LINF = {2.0, 4.0, 8.0}  # in 1/255 steps
CIFAR10_L2 = {0.25, 0.5, 1.0}


@pytest.mark.parametrize("name", CIFAR10_MODELS)
def test_cifar10_report_covers_what_the_results_page_says(name):
    report = _report(name)
    assert (report["status"], report["samples"]) == ("complete", 1000)
    rows = [r for r in report["results"] if not r["sanity"]]
    expected = {"naive", "gradient_free"} if name == "cifar10-undefended" else set(THREAT_MODELS)
    assert {r["threat_model"] for r in rows} == expected
    # The level-space attacks need a quantizer; the undefended report lists them as skipped.
    expected_attacks = {
        a for a in CIFAR10_ATTACKS if name != "cifar10-undefended" or ATTACKS[a].access != "model"
    }
    assert {r["attack"] for r in rows} == expected_attacks
    for row in rows:
        assert (row["samples"], row["complete"]) == (
            CIFAR10_LIMITED.get(row["attack"], 1000),
            True,
        ), row
    linf = {round(r["epsilon"] * 255, 6) for r in rows if r["norm"] == "linf"}
    assert linf == CIFAR10_LINF
    l2 = {r["epsilon"] for r in rows if r["norm"] == "l2" and r["epsilon"] is not None}
    assert l2 <= CIFAR10_L2


# The CIFAR-10 level sweep (docs/training.md, "The level sweep"): 8/255 and 2/255 through BPDA
# on the first 300 images of the shipped subset, for the shipped models (CIFAR10_MODELS) and
# the ones not shipped, whose reports are tied to the weights' sha256 training.md lists.
CIFAR10_SWEEP_UNSHIPPED = {
    "cifar10-cq2": "af42114f2d3132a405a24f753c5f787123833ad52e5a07b0de0802c8277ae599",
    "cifar10-tq2": "cb3c5496e9ce04ba743a56357ea97b3a40c7429926e1fbb4e675d7a395627d6f",
    "cifar10-cq8": "6850851e86c42b9fa5608264842c9534e697d572109e6e7632f74f004a3f6f29",
    "cifar10-tq8": "140eec05d426ab72600c88b710bff8ea5219b750d034d37a7b7b440998c6ef1e",
}
SWEEP_RADII = (8, 2)


@pytest.mark.parametrize("radius", SWEEP_RADII)
@pytest.mark.parametrize("name", CIFAR10_MODELS + tuple(CIFAR10_SWEEP_UNSHIPPED))
def test_cifar10_sweep_reports_belong_to_the_models_they_name(name, radius):
    report = json.loads((RESULTS / "extra" / f"{name}-sweep-{radius}of255-300.json").read_text())
    assert report["model"]["sha256"] == _weights_sha256(name)
    assert report["eval_set"]["sha256"] == sha256_file(CIFAR10_SUBSET)
    assert (report["status"], report["samples"]) == ("complete", 300)
    rows = [r for r in report["results"] if not r["sanity"]]
    assert {(r["norm"], round(r["epsilon"] * 255, 6)) for r in rows} == {("linf", radius)}
    assert all((r["samples"], r["complete"]) == (300, True) for r in rows)
    expected = {"naive"} if name == "cifar10-undefended" else {"bpda"}
    assert {r["threat_model"] for r in rows} == expected
    assert report["worst_case"] == worst_case(report["results"])


@pytest.mark.parametrize("name", CIFAR10_SWEEP_UNSHIPPED)
def test_the_training_page_names_each_unshipped_sweep_model_by_its_weights(name):
    training = (ROOT / "docs" / "training.md").read_text()
    assert f"`{CIFAR10_SWEEP_UNSHIPPED[name][:16]}`" in training


def test_every_shipped_adversarially_trained_checkpoint_has_a_published_report():
    named = {Path(report).name for report in LATER_REPORTS}
    trained = {
        path.parent.name
        for path in (ROOT / "checkpoints").glob("*/manifest.json")
        if json.loads(path.read_text())["training"].get("adversarial", "none") != "none"
    }
    assert trained and trained <= named
