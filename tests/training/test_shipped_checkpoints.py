"""The checkpoints shipped in checkpoints/ load, verify and reach their promised accuracy."""

import os
from pathlib import Path

import pytest
import torch

from models.checkpoint import load_checkpoint
from models.evalset import eval_set_path, load_eval_set
from training.datasets import load_dataset
from training.loop import evaluate

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("QUSEC_DATA_DIR", REPO.parent / "shared" / "data"))

# The accuracy each shipped checkpoint must reach (issue 2's acceptance bounds).
SHIPPED = {
    "mnist-undefended": ("none", 0.990),
    "mnist-cq2": ("cq", 0.988),
    "mnist-tq2": ("tq", 0.988),
}


@pytest.fixture(scope="module")
def mnist_subset():
    return load_eval_set(eval_set_path("mnist", REPO / "data" / "eval"))


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_checkpoint_reaches_its_accuracy_on_the_shipped_subset(name, mnist_subset):
    kind, bound = SHIPPED[name]
    loaded = load_checkpoint(REPO / "checkpoints" / name)
    assert loaded.manifest.quantizer["kind"] == kind
    assert loaded.manifest.metrics["test_samples"] == 10_000
    assert loaded.manifest.metrics["clean_accuracy"] >= bound
    with torch.no_grad():
        predicted = loaded.model(mnist_subset.images).argmax(1)
    accuracy = (predicted == mnist_subset.labels).float().mean().item()
    assert accuracy >= bound, f"{name}: {accuracy:.4f} on the shipped subset"


@pytest.mark.slow
@pytest.mark.skipif(
    not (SHARED_DATA / "mnist").is_dir(), reason=f"official MNIST files not at {SHARED_DATA}"
)
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_recorded_accuracy_is_reproduced_on_the_full_official_test_set(name):
    data = load_dataset("mnist", SHARED_DATA / "mnist")
    loaded = load_checkpoint(REPO / "checkpoints" / name)
    assert loaded.manifest.data_sha256 == data.files_sha256
    accuracy = evaluate(loaded.model, data.test, torch.device("cpu"))
    assert accuracy == pytest.approx(loaded.manifest.metrics["clean_accuracy"], abs=2e-4)
