"""The Cleverhans basic CNN, and the defended classifier: quantizer, normalization, network."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from models.quantizers import InputQuantizer, QuantizerMode, soft_steps


class _InputGradient(torch.autograd.Function):
    """Identity on a convolution's output that gives the convolution's input its gradient.

    The input gradient of the first layer is needed whenever the input carries a
    gradient: TQ's thresholds during training, and every gradient attack. On CPU,
    PyTorch's convolution backward computes it for a one-channel 8x8 stride-2 layer
    several times slower than one matrix product followed by col2im (``fold``), which
    is what this does; the weight and bias gradients still come from the convolution's
    own backward. ``benchmarks/train_throughput.py`` measures the difference.
    """

    @staticmethod
    def forward(ctx, out, x, weight, stride):  # noqa: ANN001, ANN205
        ctx.save_for_backward(weight)
        ctx.input_size = tuple(x.shape[-2:])
        ctx.stride = stride
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad_out):  # noqa: ANN001, ANN205
        (weight,) = ctx.saved_tensors
        n, out_channels = grad_out.shape[:2]
        # (C_in*kh*kw, C_out) @ (N, C_out, H_out*W_out) -> (N, C_in*kh*kw, H_out*W_out)
        cols = weight.reshape(out_channels, -1).t() @ grad_out.reshape(n, out_channels, -1)
        grad_x = F.fold(cols, ctx.input_size, weight.shape[-2:], stride=ctx.stride)
        return grad_out, grad_x, None, None


class SamePadConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding: output size ceil(input / stride).

    TF pads asymmetrically (the extra pixel goes after), which a symmetric
    ``padding=`` argument cannot express, so the padding is applied in forward.
    """

    def same_pads(self, height: int, width: int) -> list[int]:
        """F.pad's (left, right, top, bottom) for TF "SAME" on an input of this size."""
        pads = []
        for size, kernel, stride in reversed(
            list(zip((height, width), self.kernel_size, self.stride, strict=True))
        ):
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return pads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = F.pad(x, self.same_pads(*x.shape[-2:]))
        if not padded.requires_grad:
            return super().forward(padded)
        out = super().forward(padded.detach())
        return _InputGradient.apply(out, padded, self.weight.detach(), self.stride)


class BasicCNN(nn.Module):
    """Cleverhans' basic CNN as the QuSecNets paper evaluates it.

    Conv2d(C, 64, 8x8, stride 2, SAME) - ReLU - Conv2d(64, 128, 6x6, stride 2,
    valid) - ReLU - Conv2d(128, 128, 5x5, valid) - ReLU - Flatten - Linear(., classes).
    MNIST (1x28x28) reaches the dense layer as 128x1x1, CIFAR-10 (3x32x32) as 128x2x2.
    ``forward`` returns logits; softmax is applied by callers that want probabilities.
    """

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int = 10) -> None:
        super().__init__()
        channels, height, width = input_shape
        self.conv1 = SamePadConv2d(channels, 64, kernel_size=8, stride=2)
        self.conv2 = nn.Conv2d(64, 128, kernel_size=6, stride=2)
        self.conv3 = nn.Conv2d(128, 128, kernel_size=5, stride=1)
        features = 128 * _valid_size(height) * _valid_size(width)
        self.fc = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv1(x))

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Everything after the first convolution (its output, before the ReLU, comes in)."""
        x = F.relu(x)  # (N, 64, ceil(H/2), ceil(W/2))
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))  # (N, 128, h, w): 1x1 for MNIST, 2x2 for CIFAR-10
        return self.fc(torch.flatten(x, 1))


def _valid_size(size: int) -> int:
    after_conv1 = math.ceil(size / 2)
    after_conv2 = (after_conv1 - 6) // 2 + 1
    after_conv3 = after_conv2 - 5 + 1
    if after_conv3 < 1:
        raise ValueError(f"input side {size} is too small for the basic CNN (needs >= 28)")
    return after_conv3


class Normalization(nn.Module):
    """Per-channel ``(x - mean) / std``: what many networks expect instead of [0, 1] pixels.

    It sits after the quantizer, so the quantizer and every attack still work on [0, 1]
    pixels. Mean and std live in the manifest, not in the weights (non-persistent buffers).
    """

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32)
        std_t = torch.as_tensor(std, dtype=torch.float32)
        if mean_t.ndim != 1 or mean_t.shape != std_t.shape or mean_t.numel() == 0:
            raise ValueError(
                f"normalization needs one mean and one std per channel, got {len(mean)} "
                f"means and {len(std)} stds"
            )
        if not (torch.isfinite(mean_t).all() and torch.isfinite(std_t).all()):
            raise ValueError("normalization mean and std must be finite")
        if (std_t <= 0).any():
            raise ValueError(f"normalization std must be positive, got {std_t.tolist()}")
        self.register_buffer("mean", mean_t.view(-1, 1, 1), persistent=False)
        self.register_buffer("std", std_t.view(-1, 1, 1), persistent=False)
        # As given, for the manifest: float32 buffers would turn 0.3 into 0.30000001.
        self._given = {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def spec(self) -> dict:
        """As the manifest records it."""
        return {"mean": list(self._given["mean"]), "std": list(self._given["std"])}

    def extra_repr(self) -> str:
        return f"mean={self.spec()['mean']}, std={self.spec()['std']}"


class NormalizedNetwork(nn.Module):
    """Normalization, then the network: everything that sees the quantizer's output."""

    def __init__(self, normalization: Normalization, network: nn.Module) -> None:
        super().__init__()
        self.normalization = normalization
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(self.normalization(x))


class QuantizedClassifier(nn.Module):
    """A network with an optional input quantizer in front: the deployed model.

    ``cnn`` is everything after the quantizer, mapping quantized [0, 1] pixels to logits:
    the network itself, or ``NormalizedNetwork`` when the model normalizes its input
    (its weights' keys then carry a ``cnn.network.`` prefix). ``network`` and
    ``normalization`` give the parts. ``quantizer_mode`` overrides the quantizer's
    train/eval default, so an evaluation can select the soft staircase (as the co-author's
    reference code does) while serving always uses the hard one.
    """

    def __init__(
        self,
        cnn: nn.Module,
        quantizer: InputQuantizer | None = None,
        normalization: Normalization | None = None,
    ) -> None:
        super().__init__()
        self.quantizer = quantizer
        self.cnn = cnn if normalization is None else NormalizedNetwork(normalization, cnn)

    @property
    def network(self) -> nn.Module:
        """The bare network: normalized (or raw) pixels in, logits out."""
        return self.cnn.network if isinstance(self.cnn, NormalizedNetwork) else self.cnn

    @property
    def normalization(self) -> Normalization | None:
        return self.cnn.normalization if isinstance(self.cnn, NormalizedNetwork) else None

    def quantize(self, x: torch.Tensor, mode: QuantizerMode | None = None) -> torch.Tensor:
        return x if self.quantizer is None else self.quantizer(x, mode)

    def forward(self, x: torch.Tensor, quantizer_mode: QuantizerMode | None = None) -> torch.Tensor:
        if self._thresholds_by_tangents(x, quantizer_mode):
            return self.cnn.head(_soft_first_layer(x, self.quantizer, self.cnn.conv1))
        return self.cnn(self.quantize(x, quantizer_mode))

    def _thresholds_by_tangents(self, x: torch.Tensor, mode: QuantizerMode | None) -> bool:
        """Whether TQ training can take the cheaper threshold gradient of _ThresholdGradient."""
        q = self.quantizer
        return (
            q is not None
            and q.learns_thresholds
            and q.resolve_mode(mode) == "soft"
            and q.levels - 1 <= MAX_TANGENT_THRESHOLDS
            and torch.is_grad_enabled()
            and not x.requires_grad
            and isinstance(self.cnn, BasicCNN)
        )


# One extra first-layer forward per threshold costs less than the first layer's input
# gradient only for a few thresholds (benchmarks/train_throughput.py measures both).
MAX_TANGENT_THRESHOLDS = 2


def _soft_first_layer(
    x: torch.Tensor, quantizer: InputQuantizer, conv: SamePadConv2d
) -> torch.Tensor:
    thresholds = quantizer.thresholds
    # One sigmoid map per threshold, (L-1, N, C, H, W): the soft staircase is their mean,
    # and their slopes give the threshold gradient, so they are computed once for both.
    steps = soft_steps(x, thresholds.detach(), quantizer.steepness)
    # The input carries no gradient here, so the convolution's backward computes only its
    # weight and bias gradients; the thresholds get theirs from _ThresholdGradient.
    z = conv(steps.mean(0))
    return _ThresholdGradient.apply(z, thresholds, steps, conv, quantizer.steepness)


class _ThresholdGradient(torch.autograd.Function):
    """Identity on the first layer's output that gives the soft staircase's thresholds
    their gradient in forward mode.

    The first layer z = conv(q(x, t)) is linear in q, so dz/dt_i = conv_nobias(dq/dt_i),
    and dL/dt_i = <dL/dz, conv_nobias(dq/dt_i)>: one more forward of the first layer per
    threshold, instead of its input gradient (a transposed convolution over the whole
    batch), which reverse mode would need. The result is the same gradient.
    """

    @staticmethod
    def forward(ctx, z, thresholds, steps, conv, steepness):  # noqa: ANN001, ANN205
        ctx.save_for_backward(steps)
        ctx.conv, ctx.steepness = conv, steepness
        return z.view_as(z)

    @staticmethod
    def backward(ctx, grad_z):  # noqa: ANN001, ANN205
        (steps,) = ctx.saved_tensors
        count = steps.shape[0]
        slopes = (-ctx.steepness / count) * steps * (1 - steps)  # dq/dt_i: (L-1, N, C, H, W)
        conv = ctx.conv
        padded = F.pad(slopes.flatten(0, 1), conv.same_pads(*steps.shape[-2:]))
        tangents = F.conv2d(padded, conv.weight.detach(), None, conv.stride)
        # (L-1, N*64*h*w) @ (N*64*h*w,): the inner products without a product tensor.
        grad_t = tangents.reshape(count, -1) @ grad_z.reshape(-1)
        return grad_z, grad_t, None, None, None
