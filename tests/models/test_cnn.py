import pytest
import torch

from models.cnn import BasicCNN, Normalization
from models.registry import ARCHITECTURES, build_model, dataset_info


@pytest.mark.parametrize(("dataset", "spatial"), [("mnist", (1, 1)), ("cifar10", (2, 2))])
def test_shapes_match_the_paper(dataset, spatial):
    shape = dataset_info(dataset).input_shape
    cnn = BasicCNN(shape, 10)
    x = torch.rand(3, *shape)
    h = torch.relu(cnn.conv1(x))
    assert h.shape == (3, 64, shape[1] // 2, shape[2] // 2)  # TF "SAME", stride 2
    h = torch.relu(cnn.conv3(torch.relu(cnn.conv2(h))))
    assert h.shape == (3, 128, *spatial)
    assert cnn.fc.in_features == 128 * spatial[0] * spatial[1]
    assert cnn(x).shape == (3, 10)


def test_layers_are_the_cleverhans_basic_cnn():
    cnn = BasicCNN((1, 28, 28), 10)
    convs = [cnn.conv1, cnn.conv2, cnn.conv3]
    assert [c.out_channels for c in convs] == [64, 128, 128]
    assert [c.kernel_size for c in convs] == [(8, 8), (6, 6), (5, 5)]
    assert [c.stride for c in convs] == [(2, 2), (2, 2), (1, 1)]


def test_same_padding_puts_the_extra_pixel_after():
    # 8x8 kernel, stride 2 on 28: TF pads 6 in total, 3 before and 3 after; on 29: 3 and 4.
    cnn = BasicCNN((1, 29, 29), 10)
    with torch.no_grad():
        cnn.conv1.weight.zero_()
        cnn.conv1.weight[:, :, 0, 0] = 1.0
        cnn.conv1.bias.zero_()
    x = torch.zeros(1, 1, 29, 29)
    x[0, 0, 0, 0] = 1.0
    out = cnn.conv1(x)
    assert out.shape[-2:] == (15, 15)
    # Output (i, j) reads input (2i - 3, 2j - 3): pixel (0, 0) is never read with 3 before.
    assert out[0, 0].sum() == 0
    x = torch.zeros(1, 1, 29, 29)
    x[0, 0, 1, 1] = 1.0
    assert cnn.conv1(x)[0, 0, 2, 2] == 1.0


def test_quantized_classifier_quantizes_before_the_cnn():
    model = build_model("cleverhans-basic-cnn", (1, 28, 28), 10, {"kind": "cq", "levels": 2}).eval()
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(model(x), model.cnn((x > 0.5).float()))
    assert torch.equal(model.quantize(x, "soft"), model.quantizer(x, "soft"))


def test_registry_lists_valid_names_on_unknown():
    assert "cleverhans-basic-cnn" in ARCHITECTURES
    with pytest.raises(ValueError, match="valid architectures: cleverhans-basic-cnn"):
        build_model("resnet50", (1, 28, 28), 10)
    with pytest.raises(ValueError, match="valid datasets: cifar10, mnist"):
        dataset_info("imagenet")


def test_input_too_small_is_refused():
    with pytest.raises(ValueError, match="too small"):
        BasicCNN((1, 16, 16), 10)


@pytest.mark.parametrize(("channels", "side"), [(1, 28), (3, 32), (1, 29)])
def test_fast_input_gradient_matches_the_plain_convolution(channels, side):
    torch.manual_seed(0)
    conv = BasicCNN((channels, side, side), 10).conv1.double()
    reference = torch.nn.Conv2d(channels, 64, 8, stride=2).double()
    reference.load_state_dict(conv.state_dict())
    x = torch.rand(3, channels, side, side, dtype=torch.double, requires_grad=True)
    out = conv(x)
    grad_out = torch.randn_like(out)
    got = torch.autograd.grad(out, (x, conv.weight, conv.bias), grad_out)

    x_ref = x.detach().clone().requires_grad_(True)
    total = (out.shape[-1] - 1) * 2 + 8 - side  # TF "SAME": the extra pixel goes after
    padded = torch.nn.functional.pad(x_ref, [total // 2, total - total // 2] * 2)
    out_ref = reference(padded)
    want = torch.autograd.grad(out_ref, (x_ref, reference.weight, reference.bias), grad_out)
    assert torch.equal(out, out_ref)
    for g, w in zip(got, want, strict=True):
        assert torch.allclose(g, w, atol=1e-10)
    assert type(out.grad_fn).__name__ == "_InputGradientBackward"  # the fast path ran


@pytest.mark.parametrize("levels", [2, 3])
def test_forward_mode_threshold_gradient_equals_plain_autograd(levels):
    torch.manual_seed(0)
    spec = {"kind": "tq", "levels": levels, "steepness": 7.0}
    model = build_model("cleverhans-basic-cnn", (1, 28, 28), 10, spec).double().train()
    with torch.no_grad():
        model.quantizer.gap_logits.add_(torch.randn(levels) * 0.3)
    x = torch.rand(6, 1, 28, 28, dtype=torch.double)
    y = torch.randint(0, 10, (6,))
    assert model._thresholds_by_tangents(x, None)  # the fast path is the one under test

    fast_loss = torch.nn.functional.cross_entropy(model(x), y)
    fast = torch.autograd.grad(fast_loss, list(model.parameters()))
    plain_loss = torch.nn.functional.cross_entropy(model.cnn(model.quantize(x)), y)
    plain = torch.autograd.grad(plain_loss, list(model.parameters()))
    assert fast_loss.item() == plain_loss.item()
    assert fast[0].abs().sum() > 0  # the thresholds do get a gradient
    for got, want in zip(fast, plain, strict=True):
        assert torch.allclose(got, want, atol=1e-12)


def test_forward_mode_is_only_used_where_it_applies():
    model = build_model("cleverhans-basic-cnn", (1, 28, 28), 10, {"kind": "tq", "levels": 2})
    x = torch.rand(2, 1, 28, 28)
    assert model.train()._thresholds_by_tangents(x, None)
    assert not model.eval()._thresholds_by_tangents(x, None)  # hard staircase
    assert not model.train()._thresholds_by_tangents(x.requires_grad_(), None)  # attacks
    with torch.no_grad():
        assert not model._thresholds_by_tangents(x.detach(), None)
    many = build_model("cleverhans-basic-cnn", (1, 28, 28), 10, {"kind": "tq", "levels": 8})
    assert not many.train()._thresholds_by_tangents(x.detach(), None)


def test_normalization_comes_after_the_quantizer():
    model = build_model(
        "resnet20",
        (3, 8, 8),
        5,
        {"kind": "cq", "levels": 2},
        {"blocks_per_stage": 1},
        {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.3, 0.4]},
    ).eval()
    seen = []
    model.network.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    x = torch.rand(2, 3, 8, 8)
    model(x)
    quantized = (x > 0.5).float()  # the quantizer saw [0, 1] pixels
    mean = torch.tensor([0.5, 0.4, 0.3]).view(-1, 1, 1)
    std = torch.tensor([0.2, 0.3, 0.4]).view(-1, 1, 1)
    torch.testing.assert_close(seen[0], (quantized - mean) / std)
    # The weights' keys are the network's under cnn.network.; mean and std live in the manifest.
    keys = [k for k in model.state_dict() if not k.startswith("quantizer.")]
    assert keys and all(k.startswith("cnn.network.") for k in keys)


def test_normalization_refuses_bad_statistics():
    with pytest.raises(ValueError, match="one mean and one std per channel"):
        Normalization([0.5, 0.5], [1.0])
    with pytest.raises(ValueError, match="positive"):
        Normalization([0.5], [0.0])
