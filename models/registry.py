"""Architecture name -> builder table, and the dataset facts models need."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from models.cnn import BasicCNN, QuantizedClassifier
from models.quantizers import build_quantizer
from models.resnet import CifarResNet


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...]


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", (1, 28, 28), tuple(str(d) for d in range(10))),
    "cifar10": DatasetInfo(
        "cifar10",
        (3, 32, 32),
        (
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ),
    ),
}

Builder = Callable[[tuple[int, int, int], int], nn.Module]
ARCHITECTURES: dict[str, Builder] = {
    "cleverhans-basic-cnn": lambda input_shape, num_classes: BasicCNN(input_shape, num_classes),
    "resnet20": lambda input_shape, num_classes: CifarResNet(input_shape, num_classes, 3),
}


def dataset_info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(
            f"unknown dataset {name!r}; valid datasets: {', '.join(sorted(DATASETS))}"
        ) from None


def build_model(
    architecture: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    quantizer: dict | None = None,
) -> QuantizedClassifier:
    """Build a classifier; ``quantizer`` is a manifest-style spec (kind, levels, ...)."""
    try:
        builder = ARCHITECTURES[architecture]
    except KeyError:
        raise ValueError(
            f"unknown architecture {architecture!r}; valid architectures: "
            f"{', '.join(sorted(ARCHITECTURES))}"
        ) from None
    spec = dict(quantizer or {"kind": "none"})
    return QuantizedClassifier(
        builder(tuple(input_shape), num_classes),
        build_quantizer(
            spec["kind"], spec.get("levels", 2), spec.get("thresholds"), spec.get("steepness")
        ),
    )
