"""Architecture name -> factory table, extended by installed packages, and the dataset facts.

A factory is ``factory(input_shape, num_classes, **architecture_args) -> nn.Module`` and
returns logits. Two are built in; any installed package can add more through the entry-point
group ``qusec.architectures`` (``name = "package.module:factory"`` in its pyproject), with no
edit to QuSec. The group is read on the first lookup of a name that is not built in (or when
the full list of names is asked for), never at import. The arguments a checkpoint was built
with are recorded in its manifest (``architecture_args``) and passed again when it is loaded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from torch import nn

from models.cnn import BasicCNN, Normalization, QuantizedClassifier
from models.quantizers import build_quantizer
from models.resnet import CifarResNet

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "qusec.architectures"


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

Factory = Callable[..., nn.Module]


def _basic_cnn(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    return BasicCNN(input_shape, num_classes)


def _resnet(
    input_shape: tuple[int, int, int],
    num_classes: int,
    blocks_per_stage: int = 3,
    width: int = 16,
) -> nn.Module:
    return CifarResNet(input_shape, num_classes, blocks_per_stage, width)


# The built-in factories; installed packages add theirs via ENTRY_POINT_GROUP.
ARCHITECTURES: dict[str, Factory] = {
    "cleverhans-basic-cnn": _basic_cnn,
    "resnet20": _resnet,
}
_entry_points_read = False


class ArchitectureError(ValueError):
    """An architecture name is unknown, or its factory cannot be loaded or refuses its args."""


def register_architecture(name: str, factory: Factory) -> None:
    """Add a factory by hand (tests, notebooks); an installed package uses the entry point."""
    if name in ARCHITECTURES and ARCHITECTURES[name] is not factory:
        raise ArchitectureError(f"architecture {name!r} is already registered")
    ARCHITECTURES[name] = factory


def _read_entry_points() -> None:
    """Add every ``qusec.architectures`` entry point's name (its factory loads on use)."""
    global _entry_points_read
    if _entry_points_read:
        return
    _entry_points_read = True
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in ARCHITECTURES:
            log.warning(
                "entry point %s = %s ignored: %r is already registered",
                entry.name,
                entry.value,
                entry.name,
            )
            continue
        ARCHITECTURES[entry.name] = _LazyFactory(entry)


class _LazyFactory:
    """An entry point's factory, imported when a model is first built from it."""

    def __init__(self, entry: metadata.EntryPoint) -> None:
        self.entry = entry
        self._factory: Factory | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> nn.Module:
        if self._factory is None:
            try:
                self._factory = self.entry.load()
            except Exception as exc:  # noqa: BLE001 - any import failure of a plugin
                raise ArchitectureError(
                    f"architecture {self.entry.name!r}: cannot load its factory "
                    f"{self.entry.value} ({type(exc).__name__}: {exc})"
                ) from exc
        return self._factory(*args, **kwargs)


def architecture_names() -> list[str]:
    """Every registered name, built-in and installed, sorted."""
    _read_entry_points()
    return sorted(ARCHITECTURES)


def architecture_factory(name: str) -> Factory:
    if name not in ARCHITECTURES:
        _read_entry_points()
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ArchitectureError(
            f"unknown architecture {name!r}; valid architectures: "
            f"{', '.join(architecture_names())} (a package adds one through the "
            f"{ENTRY_POINT_GROUP!r} entry-point group)"
        ) from None


def dataset_info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(
            f"unknown dataset {name!r}; valid datasets: {', '.join(sorted(DATASETS))}"
        ) from None


def build_network(
    architecture: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    architecture_args: dict[str, Any] | None = None,
) -> nn.Module:
    """The bare network (pixels or normalized pixels in, logits out) from its factory."""
    factory = architecture_factory(architecture)
    try:
        network = factory(tuple(input_shape), num_classes, **(architecture_args or {}))
    except ArchitectureError:
        raise
    except (TypeError, ValueError) as exc:
        raise ArchitectureError(
            f"architecture {architecture!r} refused input_shape {list(input_shape)}, "
            f"{num_classes} classes and arguments {architecture_args or {}}: {exc}"
        ) from None
    if not isinstance(network, nn.Module):
        raise ArchitectureError(
            f"architecture {architecture!r}'s factory returned {type(network).__name__}, "
            "not a torch.nn.Module"
        )
    return network


def build_model(
    architecture: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    quantizer: dict | None = None,
    architecture_args: dict[str, Any] | None = None,
    normalization: dict | None = None,
) -> QuantizedClassifier:
    """Build a classifier; ``quantizer`` is a manifest-style spec (kind, levels, ...) and
    ``normalization`` a manifest-style ``{"mean": [...], "std": [...]}`` or None."""
    network = build_network(architecture, input_shape, num_classes, architecture_args)
    return assemble(network, quantizer, normalization)


def assemble(
    network: nn.Module, quantizer: dict | None = None, normalization: dict | None = None
) -> QuantizedClassifier:
    """Quantizer in front, then normalization, then ``network``: the deployed model."""
    spec = dict(quantizer or {"kind": "none"})
    norm = None
    if normalization is not None:
        norm = Normalization(normalization["mean"], normalization["std"])
    return QuantizedClassifier(
        network,
        build_quantizer(
            spec["kind"], spec.get("levels", 2), spec.get("thresholds"), spec.get("steepness")
        ),
        norm,
    )
