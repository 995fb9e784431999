"""Tiny data and models for the robustness tests, made here, in seconds.

The synthetic "digits" are 10 block patterns on a 7x7 grid, upsampled to 28x28 (the
smallest input the basic CNN takes), with 8% of blocks flipped per sample. Pixels sit in
[0.25, 0.45] (off) or [0.55, 0.75] (on): the 0.5 threshold of a 2-level quantizer recovers
the pattern exactly, and every pixel is within 0.3 of it, so an eps=0.3 attacker who gets
gradients through the quantizer can flip any pixel, while one who does not gets nothing.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from models.checkpoint import Manifest, save_checkpoint
from models.evalset import EvalSet, write_eval_set
from models.registry import build_model
from robustness.runner import Subject


def synthetic_digits(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    patterns = torch.rand(10, 1, 7, 7, generator=torch.Generator().manual_seed(1234)) < 0.35
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (count,), generator=g)
    blocks = patterns[labels].float()
    blocks = torch.where(torch.rand(blocks.shape, generator=g) < 0.08, 1 - blocks, blocks)
    on = F.interpolate(blocks, scale_factor=4, mode="nearest")  # (N, 1, 28, 28)
    low = 0.25 + 0.2 * torch.rand(on.shape, generator=g)
    high = 0.55 + 0.2 * torch.rand(on.shape, generator=g)
    return torch.where(on > 0, high, low), labels


def train_tiny(quantizer: str, steps: int = 80, seed: int = 0):
    torch.manual_seed(seed)
    x, y = synthetic_digits(2000, seed=0)
    spec = None if quantizer == "none" else {"kind": quantizer, "levels": 2}
    model = build_model("cleverhans-basic-cnn", (1, 28, 28), 10, spec)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        index = torch.randint(0, len(x), (64,))
        loss = F.cross_entropy(model(x[index]), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    # The machine is shared with training jobs; tests stay on one core.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def undefended_model():
    return train_tiny("none")


@pytest.fixture(scope="session")
def masked_model():
    return train_tiny("cq")


@pytest.fixture(scope="session")
def eval_set() -> EvalSet:
    images, labels = synthetic_digits(64, seed=1)
    return EvalSet("synthetic-digits", images, labels, "synthetic")


@pytest.fixture(scope="session")
def eval_set_8bit(eval_set) -> EvalSet:
    """The same images on the 8-bit grid, as an 8-bit image file would load."""
    images = torch.round(eval_set.images * 255) / 255
    return EvalSet("synthetic-digits-8bit", images, eval_set.labels, "synthetic-8bit")


@pytest.fixture(scope="session")
def undefended(undefended_model) -> Subject:
    return Subject("tiny-undefended", "synthetic", "sha-undefended", undefended_model)


@pytest.fixture(scope="session")
def masked(masked_model) -> Subject:
    return Subject("tiny-cq2", "synthetic", "sha-cq2", masked_model)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, undefended_model, masked_model, eval_set):
    """Tiny checkpoints (mnist-undefended, mnist-cq2) and an evaluation set on disk, for the
    command line's tests."""
    root = tmp_path_factory.mktemp("cli")
    for name, model in (("mnist-undefended", undefended_model), ("mnist-cq2", masked_model)):
        manifest = Manifest(
            architecture="cleverhans-basic-cnn",
            dataset="mnist",
            input_shape=[1, 28, 28],
            class_names=[str(d) for d in range(10)],
            quantizer={},
        )
        save_checkpoint(root / "checkpoints" / name, model, manifest)
    images = (eval_set.images * 255).round().to(dtype=torch.uint8).numpy()
    write_eval_set(
        root / "eval" / "mnist-test-first1000.npz",
        images,
        eval_set.labels.numpy().astype(np.int64),
        {"source": "synthetic test digits"},
    )
    return root
