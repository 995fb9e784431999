"""The CIFAR ResNet of He et al. 2016 ("Deep Residual Learning for Image Recognition", §4.2).

A 3x3 convolution with 16 filters, then three stages of ``n`` basic blocks (two 3x3
convolutions with batch norm) at 16, 32 and 64 filters, the second and third starting with a
stride-2 block, then global average pooling and a dense layer: 6n + 2 layers, so n = 3 is
ResNet-20 (0.27 M parameters, 91.25% on CIFAR-10 in the paper). Where a block changes width
or resolution its shortcut is a 1x1 convolution with batch norm (the paper's option B);
elsewhere it is the identity. Any input size and channel count works: the pooling makes the
dense layer's width independent of the image side.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small images; ``forward`` returns logits."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int = 10,
        blocks_per_stage: int = 3,
        width: int = 16,
    ) -> None:
        super().__init__()
        if blocks_per_stage < 1 or width < 1:
            raise ValueError("blocks_per_stage and width must be >= 1")
        channels = input_shape[0]
        self.stem = nn.Sequential(
            nn.Conv2d(channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        stages: list[nn.Module] = []
        in_channels = width
        for stage in range(3):
            out_channels = width * 2**stage
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                stages.append(BasicBlock(in_channels, out_channels, stride))
                in_channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(in_channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))  # (N, 4 * width, ceil(H/4), ceil(W/4))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
