"""The checkpoints shipped in checkpoints/ load, verify and reach their promised accuracy."""

from pathlib import Path

import pytest
import torch

from models.checkpoint import load_checkpoint
from models.evalset import eval_set_path, load_eval_set
from training.datasets import load_dataset
from training.loop import evaluate

REPO = Path(__file__).resolve().parents[2]
# The accuracy each shipped checkpoint must reach on the full official test set (issue 2's
# bounds for MNIST, issue 8's for CIFAR-10, issue 23's for the ResNet, issue 24's for the
# adversarially trained models' clean accuracy), and on the shipped 1,000-image subset.
SHIPPED = {
    "mnist-undefended": ("none", 0.990, 0.990),
    "mnist-cq2": ("cq", 0.988, 0.988),
    "mnist-tq2": ("tq", 0.988, 0.988),
    "cifar10-undefended": ("none", 0.700, 0.700),
    "cifar10-cq4": ("cq", 0.700, 0.700),
    "cifar10-tq4": ("tq", 0.710, 0.710),
    "cifar10-resnet20": ("none", 0.880, 0.880),
    "cifar10-resnet20-cq4": ("cq", 0.820, 0.830),
    "cifar10-resnet20-tq4": ("tq", 0.820, 0.810),
    "mnist-pgd": ("none", 0.985, 0.985),
    "mnist-pgd-tq2": ("tq", 0.985, 0.985),
    "cifar10-fgsm": ("none", 0.540, 0.550),
    "cifar10-fgsm-tq4": ("tq", 0.550, 0.570),
    "cifar10-pgd": ("none", 0.540, 0.560),
    "cifar10-pgd-noaug": ("none", 0.575, 0.590),
    "cifar10-pgd-tq4": ("tq", 0.545, 0.565),
    "cifar10-trades": ("none", 0.555, 0.575),
    "cifar10-rslad": ("none", 0.585, 0.595),
    "cifar10-resnet20-fgsm": ("none", 0.760, 0.770),
    "cifar10-pgd-scratch": ("none", 0.560, 0.580),
    "cifar10-pgd-long": ("none", 0.550, 0.565),
    "cifar10-pgd-long-tq4": ("tq", 0.550, 0.570),
    "cifar10-trades-long": ("none", 0.590, 0.610),
    "cifar10-trades-long-tq4": ("tq", 0.585, 0.620),
    "cifar10-pgd-ema-tq4": ("tq", 0.560, 0.575),
    "cifar10-pgd10-ema-tq4": ("tq", 0.540, 0.560),
}


def _dataset(name: str) -> str:
    return name.split("-")[0]


@pytest.fixture(scope="module")
def subsets():
    return {
        dataset: load_eval_set(eval_set_path(dataset, REPO / "data" / "eval"))
        for dataset in {_dataset(name) for name in SHIPPED}
    }


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_checkpoint_reaches_its_accuracy_on_the_shipped_subset(name, subsets):
    kind, full_bound, subset_bound = SHIPPED[name]
    subset = subsets[_dataset(name)]
    loaded = load_checkpoint(REPO / "checkpoints" / name)
    assert loaded.manifest.dataset == _dataset(name)
    assert loaded.manifest.quantizer["kind"] == kind
    assert loaded.manifest.metrics["test_samples"] == 10_000
    assert loaded.manifest.metrics["clean_accuracy"] >= full_bound
    with torch.no_grad():
        predicted = loaded.model(subset.images).argmax(1)
    accuracy = (predicted == subset.labels).float().mean().item()
    assert accuracy >= subset_bound, f"{name}: {accuracy:.4f} on the shipped subset"


@pytest.fixture(scope="module")
def official(official_data):
    """Each dataset's official files, read and hashed once for every checkpoint of it."""
    loaded = {}

    def dataset(name: str):
        if name not in loaded:
            loaded[name] = load_dataset(name, official_data(name))
        return loaded[name]

    return dataset


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_recorded_accuracy_is_reproduced_on_the_full_official_test_set(name, official):
    data = official(_dataset(name))
    loaded = load_checkpoint(REPO / "checkpoints" / name)
    assert loaded.manifest.data_sha256 == data.files_sha256
    accuracy = evaluate(loaded.model, data.test, torch.device("cpu"))
    assert accuracy == pytest.approx(loaded.manifest.metrics["clean_accuracy"], abs=2e-4)
