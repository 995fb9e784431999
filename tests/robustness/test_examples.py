"""Adversarial examples kept with a report: which ones, what they show, and their bounds."""

from __future__ import annotations

import base64
import dataclasses
import io

import numpy as np
import torch
from PIL import Image

from robustness.attacks import ATTACKS
from robustness.examples import ExampleCollector, png_base64
from robustness.merge import merge_reports
from robustness.request import SuiteRequest
from robustness.runner import Unit, run_suite

REQUEST = SuiteRequest(
    attacks=("fgsm", "cw_l2"),
    threat_models=("naive", "bpda"),
    epsilons=(0.1, 0.3),
    samples=24,
    batch_size=12,
    attack_params={"cw_l2": {"max_iterations": 5, "binary_search_steps": 1}},
    sanity_epsilon=1.0,
    sanity_samples=12,
)


def _pixels(encoded: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))))


def test_one_group_per_judged_radius_with_true_predictions(masked, eval_set):
    report = run_suite(masked, eval_set, REQUEST)
    examples = report["examples"]
    keys = [(g["attack"], g["threat_model"], g["norm"], g["epsilon"]) for g in examples["groups"]]
    # fgsm at its two radii; cw_l2 (minimal) projected onto every L-inf radius; no sanity runs.
    attacks, threats = ("fgsm", "cw_l2"), ("naive", "bpda")
    expected = [(a, t, "linf", e) for a in attacks for t in threats for e in (0.1, 0.3)]
    assert sorted(keys) == sorted(expected)
    model = masked.model
    for group in examples["groups"]:
        assert 1 <= len(group["examples"]) <= examples["per_group"] == 3
        fooled = [e["adversarial_prediction"] != e["label"] for e in group["examples"]]
        assert fooled == sorted(fooled, reverse=True)  # the attack's wins come first
        for example in group["examples"]:
            images = {k: _pixels(v) for k, v in example["images"].items()}
            assert images["clean"].shape == (28, 28)
            clean = torch.from_numpy(images["clean"].copy()).float()[None, None] / 255
            adversarial = torch.from_numpy(images["adversarial"].copy()).float()[None, None] / 255
            # The stored images are the samples themselves, to 8-bit rounding.
            index = example["index"]
            assert torch.allclose(clean, eval_set.images[index : index + 1], atol=0.5 / 255 + 1e-6)
            assert (adversarial - clean).abs().max() <= group["epsilon"] + 1 / 255
            with torch.no_grad():
                assert int(model(clean).argmax()) == example["clean_prediction"] == example["label"]
            # A 2-level quantizer makes binary images.
            assert set(np.unique(images["adversarial_quantized"])) <= {0, 255}


def test_byte_budget_drops_whole_groups_and_counts_them(masked, eval_set):
    collector = ExampleCollector(per_unit=2, max_bytes=1)
    x, y = eval_set.images[:8], eval_set.labels[:8]
    collector.add_unit(
        Unit("fgsm", "naive", 0.1, 8),
        ATTACKS["fgsm"],
        masked.model,
        x,
        x,
        y,
        torch.ones(8, dtype=torch.bool),
        REQUEST,
    )
    assert collector.as_dict() == {"per_group": 2, "groups": [], "dropped_groups": 1}


def test_merge_replaces_the_rerun_pairs_examples(masked, eval_set):
    base = run_suite(masked, eval_set, REQUEST)
    part = run_suite(
        masked, eval_set, dataclasses.replace(REQUEST, attacks=("fgsm",), attack_params={})
    )
    part["examples"]["groups"][0]["examples"] = []
    merged = merge_reports(base, part)
    groups = merged["examples"]["groups"]
    assert len(groups) == len(base["examples"]["groups"])
    assert groups[0]["attack"] == "fgsm" and groups[0]["examples"] == []
    assert [g["attack"] for g in groups] == sorted(
        (g["attack"] for g in groups), key=("fgsm", "cw_l2").index
    )


def test_png_encoding_keeps_colour_images_in_rgb():
    image = torch.zeros(3, 4, 5)
    image[0] = 1.0
    pixels = _pixels(png_base64(image))
    assert pixels.shape == (4, 5, 3)
    assert (pixels[..., 0] == 255).all() and (pixels[..., 1:] == 0).all()
