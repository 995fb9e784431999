"""One schema for manifest.json: each wrong type or value is refused, naming its field."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from models.checkpoint import CheckpointError, read_manifest
from models.manifest_schema import manifest_problem

SHIPPED = Path(__file__).resolve().parents[2] / "checkpoints"


def shipped(name: str = "mnist-tq2") -> dict:
    return json.loads((SHIPPED / name / "manifest.json").read_text())


def changed(path: str, value: object, name: str = "mnist-tq2") -> dict:
    """The shipped manifest with the dotted ``path`` set to ``value`` (or removed)."""
    manifest = copy.deepcopy(shipped(name))
    *parents, last = path.split(".")
    node = manifest
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is REMOVE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return manifest


REMOVE = object()
MALFORMED = [
    ("architecture", 7, "architecture"),
    ("architecture", "resnet-50", "architecture"),
    ("dataset", ["mnist"], "dataset"),
    ("dataset", "../etc", "dataset"),
    ("input_shape", [1, 28], "input_shape"),
    ("input_shape", [1, 28, 28, 1], "input_shape"),
    ("input_shape", ["1", 28, 28], "input_shape.0"),
    ("input_shape", [1, 28.0, 28], "input_shape.1"),
    ("input_shape", [1, 28, True], "input_shape.2"),
    ("input_shape", [1, 28, -28], "input_shape.2"),
    ("input_shape", [1, 100000, 100000], "input_shape.1"),
    ("input_shape", [4, 28, 28], "input_shape"),
    ("input_shape", [3, 32, 32], "input_shape"),  # not MNIST's shape
    ("class_names", "0123456789", "class_names"),
    ("class_names", [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "class_names.0"),
    ("class_names", ["0"] * 10, "class_names"),
    ("class_names", [str(d) for d in range(9)], "class_names"),
    ("class_names", [], "class_names"),
    ("quantizer", "tq", "quantizer"),
    ("quantizer.kind", "jpeg", "quantizer.kind"),
    ("quantizer.levels", "2", "quantizer.levels"),
    ("quantizer.levels", 1, "quantizer.levels"),
    ("quantizer.levels", 3, "quantizer"),  # 3 levels, one threshold
    ("quantizer.thresholds", [1.5], "quantizer"),
    ("quantizer.thresholds", ["0.4"], "quantizer.thresholds.0"),
    ("quantizer.thresholds", REMOVE, "quantizer"),
    ("quantizer.steepness", -1.0, "quantizer.steepness"),
    ("quantizer.steepness", "steep", "quantizer.steepness"),
    ("metrics", [], "metrics"),
    ("metrics.clean_accuracy", 99.14, "metrics.clean_accuracy"),
    ("metrics.clean_accuracy", "high", "metrics.clean_accuracy"),
    ("weights_sha256", 12, "weights_sha256"),
    ("weights_sha256", "not-a-digest", "weights_sha256"),
    ("data_sha256", {"train.gz": 5}, "data_sha256.train.gz"),
    ("training", "none", "training"),
    ("name", "a name/with slash", "name"),
    ("name", 3, "name"),
    ("created_at", 20261125, "created_at"),
    ("git_revision", None, "git_revision"),
    ("unexpected", 1, "unexpected"),
    ("architecture", REMOVE, "architecture"),
    ("weights_sha256", REMOVE, "weights_sha256"),
    ("format", "onnx", "format"),
    ("architecture_args", {"not a name": 1}, "architecture_args.not a name.[key]"),
    ("architecture_args", [1], "architecture_args"),
    ("normalization", {"mean": [0.5]}, "normalization.std"),
    ("normalization", {"mean": [0.5], "std": [0.0]}, "normalization.std.0"),
    ("normalization", {"mean": [0.5, 0.5], "std": [1.0]}, "normalization"),
    ("normalization", {"mean": [0.5, 0.5], "std": [1.0, 1.0]}, "manifest"),  # 1 channel
]


def test_the_shipped_manifests_satisfy_the_schema() -> None:
    for name in ("mnist-tq2", "mnist-cq2", "mnist-undefended"):
        assert manifest_problem(shipped(name)) is None, name


@pytest.mark.parametrize(("path", "value", "field"), MALFORMED)
def test_each_malformed_manifest_is_refused_naming_its_file_and_field(
    tmp_path, path, value, field
) -> None:
    folder = tmp_path / "mnist-tq2"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(changed(path, value)))
    with pytest.raises(CheckpointError) as caught:
        read_manifest(folder)
    message = str(caught.value)
    assert str(folder / "manifest.json") in message
    assert f"field {field}:" in message


def test_any_dataset_size_and_class_count_works_beyond_the_known_datasets() -> None:
    manifest = changed("dataset", "flowers")
    manifest.update(input_shape=[3, 96, 64], class_names=[f"c{i}" for i in range(37)])
    manifest.update(architecture="resnet20", architecture_args={"width": 8})
    manifest["normalization"] = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2]}
    assert manifest_problem(manifest) is None
    manifest["input_shape"] = [4, 96, 64]
    assert "1 (grey) or 3 (RGB) channels" in manifest_problem(manifest)


def test_an_exported_program_is_its_own_architecture() -> None:
    manifest = changed("format", "exported-program")
    assert manifest_problem(manifest).startswith("field architecture:")
    manifest["architecture"] = "exported-program"
    assert manifest_problem(manifest) is None
    assert manifest_problem(changed("architecture", "exported-program")).startswith(
        "field architecture:"
    )


def test_an_undefended_model_has_no_thresholds() -> None:
    manifest = changed("quantizer", {"kind": "none", "levels": 2}, name="mnist-undefended")
    assert manifest_problem(manifest).startswith("field quantizer:")
    assert manifest_problem(changed("quantizer", {"kind": "none"}, "mnist-undefended")) is None
