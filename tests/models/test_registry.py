"""The architecture registry: built-ins, factory arguments, and installed packages' entry points."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch.nn import functional as F

from models import registry
from models.checkpoint import (
    CheckpointError,
    Manifest,
    load_checkpoint,
    read_manifest,
    save_checkpoint,
)
from models.registry import ArchitectureError, architecture_names, build_model
from tests.models.fixtures.plugin import install_test_architecture


def test_importing_the_models_package_reads_no_entry_points() -> None:
    code = (
        "import models.checkpoint, models.registry as r; "
        "r.build_model('resnet20', (3, 32, 32), 10); print(r._entry_points_read)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


def test_unknown_architecture_lists_the_valid_names() -> None:
    with pytest.raises(ArchitectureError, match="valid architectures: .*resnet20"):
        build_model("resnet-50", (3, 32, 32), 10)


def test_factory_arguments_reach_the_factory_and_bad_ones_are_named() -> None:
    model = build_model("resnet20", (3, 16, 16), 4, architecture_args={"blocks_per_stage": 1})
    assert len(model.network.stages) == 3
    with pytest.raises(ArchitectureError, match="refused .*depth"):
        build_model("resnet20", (3, 16, 16), 4, architecture_args={"depth": 56})


def _one_step(model, shape, classes) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.rand(8, *shape), torch.randint(0, classes, (8,))
    model.train()
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    model.eval()


def test_an_installed_package_adds_an_architecture_that_trains_saves_and_loads(
    tmp_path, monkeypatch
) -> None:
    names = install_test_architecture(tmp_path, monkeypatch)
    assert names == ["test-mlp"]
    assert "test-mlp" in architecture_names()
    torch.manual_seed(0)
    shape, classes = (1, 12, 10), 3
    model = build_model(
        "test-mlp",
        shape,
        classes,
        {"kind": "cq", "levels": 4},
        {"hidden": 5},
        normalization={"mean": [0.5], "std": [0.25]},
    )
    assert model.network[1].out_features == 5
    _one_step(model, shape, classes)
    manifest = Manifest(
        architecture="test-mlp",
        dataset="toy",
        input_shape=list(shape),
        class_names=["a", "b", "c"],
        quantizer={},
        architecture_args={"hidden": 5},
    )
    save_checkpoint(tmp_path / "mlp", model, manifest)
    assert read_manifest(tmp_path / "mlp").architecture_args == {"hidden": 5}
    loaded = load_checkpoint(tmp_path / "mlp")
    x = torch.rand(4, *shape)
    torch.testing.assert_close(loaded.model(x), model(x), rtol=0, atol=0)
    assert loaded.model.normalization.spec() == {"mean": [0.5], "std": [0.25]}


def test_a_checkpoint_of_an_uninstalled_architecture_names_the_cause(tmp_path, monkeypatch) -> None:
    with monkeypatch.context() as patch:
        install_test_architecture(tmp_path, patch)
        model = build_model("test-mlp", (1, 4, 4), 2)
        save_checkpoint(
            tmp_path / "mlp",
            model,
            Manifest("test-mlp", "toy", [1, 4, 4], ["a", "b"], {}),
        )
    monkeypatch.setattr(registry, "_entry_points_read", False)
    with pytest.raises(CheckpointError, match="'test-mlp' is unknown.*installed"):
        load_checkpoint(tmp_path / "mlp")
