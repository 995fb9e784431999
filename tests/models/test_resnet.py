"""The CIFAR ResNet-20: shape, size, any input, and a checkpoint round trip behind a quantizer."""

import pytest
import torch

from models.checkpoint import Manifest, load_checkpoint, save_checkpoint
from models.registry import build_model
from models.resnet import CifarResNet


def test_resnet20_has_the_papers_size_and_depth():
    model = CifarResNet((3, 32, 32), 10, blocks_per_stage=3)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    shortcut_convs = [c for c in convs if c.kernel_size == (1, 1)]
    # 6n + 2 = 20 weighted layers: 19 3x3 convolutions and the dense layer (n = 3), plus two
    # projection shortcuts where the width doubles (option B).
    assert len(convs) - len(shortcut_convs) == 19 and len(shortcut_convs) == 2
    parameters = sum(p.numel() for p in model.parameters())
    assert 0.26e6 < parameters < 0.29e6  # He et al.: 0.27 M


@pytest.mark.parametrize(
    ("shape", "classes"), [((3, 32, 32), 10), ((1, 28, 28), 7), ((3, 45, 61), 3)]
)
def test_any_input_size_channel_count_and_class_count(shape, classes):
    model = build_model("resnet20", shape, classes).eval()
    assert model(torch.rand(2, *shape)).shape == (2, classes)


def test_checkpoint_round_trip_behind_a_quantizer(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet20", (3, 32, 32), 10, {"kind": "tq", "levels": 4})
    model.train()
    model(torch.rand(16, 3, 32, 32))  # move the batch-norm running statistics off their start
    model.eval()
    manifest = Manifest("resnet20", "cifar10", [3, 32, 32], [str(i) for i in range(10)], {})
    save_checkpoint(tmp_path / "ckpt", model, manifest)
    loaded = load_checkpoint(tmp_path / "ckpt")
    x = torch.rand(4, 3, 32, 32)
    assert torch.equal(loaded.model(x), model(x))
    assert loaded.manifest.architecture == "resnet20"
